"""Safe reading of .npz archives: plain data round trips, crafted pickles refused, bounded memory."""
import collections
import io
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import archive_factory as factory
from iivformer import npz
from iivformer.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "eval_fixture"
REPOSITORY = Path(__file__).parent.parent
PEAK_LIMIT = 1536 << 20  # 1.5 GiB: far above what reading needs, far below what the crafted files ask for


# --- pickles written opcode by opcode ----------------------------------------------------------

def text(value: str) -> bytes:
    """A str (BINUNICODE)."""
    data = value.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def raw(data: bytes) -> bytes:
    """A bytes object (BINBYTES)."""
    return pickle.BINBYTES + struct.pack("<I", len(data)) + data


def integer(value: int) -> bytes:
    """A 32-bit int (BININT)."""
    return pickle.BININT + struct.pack("<i", value)


def named(module: str, name: str) -> bytes:
    """The object `module.name` (GLOBAL)."""
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def tuple_of(*parts: bytes) -> bytes:
    """A tuple of the values the parts push (MARK ... TUPLE)."""
    return pickle.MARK + b"".join(parts) + pickle.TUPLE


def called(function: bytes, *arguments: bytes) -> bytes:
    """function(*arguments) (REDUCE)."""
    return function + tuple_of(*arguments) + pickle.REDUCE


def dtype(typestr: str, order="<", elsize=-1, alignment=-1, flags=0, state=None) -> bytes:
    """numpy.dtype(typestr) and its BUILD state, as numpy writes them (or with `state` instead)."""
    state = state or tuple_of(integer(3), text(order), pickle.NONE * 3, integer(elsize), integer(alignment),
                              integer(flags))
    return called(named("numpy", "dtype"), text(typestr), pickle.NEWFALSE, pickle.NEWTRUE) + state + pickle.BUILD


OBJECT = dtype("O8", "|", flags=63)


def array(shape, dtype_ops: bytes, data_ops: bytes, fortran=False) -> bytes:
    """numpy's _reconstruct(ndarray, (0,), b'b') and its BUILD with (1, shape, dtype, fortran, data)."""
    empty = called(named("numpy.core.multiarray", "_reconstruct"), named("numpy", "ndarray"),
                   tuple_of(integer(0)), raw(b"b"))
    state = tuple_of(integer(1), tuple_of(*map(integer, shape)), dtype_ops,
                     pickle.NEWTRUE if fortran else pickle.NEWFALSE, data_ops)
    return empty + state + pickle.BUILD


def pickled(value_ops: bytes) -> bytes:
    """A whole pickle of the 0-d object array numpy wraps a pickled value in."""
    return pickle.PROTO + b"\x02" + array((), OBJECT, pickle.EMPTY_LIST + value_ops + pickle.APPEND) + pickle.STOP


def npy_member(payload: bytes, descr="|O", shape=()) -> bytes:
    """An .npy file: a version 1.0 header, then `payload` (a pickle for the object dtype)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue() + payload


def archive(path: Path, **members: bytes) -> Path:
    """An .npz holding the given .npy member contents (deflated, as savez_compressed writes them)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, content in members.items():
            zipped.writestr(name + ".npy", content)
    return path


def with_value(tmp_path, value, protocol: int, name="positions_3d") -> Path:
    """An archive whose member `name` is `value` pickled by the standard pickler, as np.save does."""
    wrapper = np.empty((), dtype=object)
    wrapper[()] = value
    return archive(tmp_path / f"protocol{protocol}.npz", **{name: npy_member(pickle.dumps(wrapper, protocol=protocol))})


def same(expected, actual) -> bool:
    """Equal in type, dtype, byte order, memory order and value, all the way down."""
    if isinstance(expected, np.ndarray):
        return (type(actual) is np.ndarray and actual.dtype == expected.dtype and actual.shape == expected.shape
                and actual.dtype.byteorder == expected.dtype.byteorder and actual.tobytes("A") == expected.tobytes("A")
                and actual.flags.f_contiguous == expected.flags.f_contiguous and actual.flags.writeable)
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, dict):
        return list(expected) == list(actual) and all(same(expected[key], actual[key]) for key in expected)
    if isinstance(expected, (list, tuple)):
        return len(expected) == len(actual) and all(map(same, expected, actual))
    return expected == actual


# --- round trips -----------------------------------------------------------------------------------

PLAIN_VALUES = {
    "positions": {"S1": {"Walking 1": [np.full((2, 17, 2), view, np.float32) for view in range(4)]}},
    "ordered": collections.OrderedDict([("b", 1), ("a", [1.5, -2, None, True, False])]),
    "scalars": [np.float64(2.5), np.float32(-1), np.int64(-7), np.uint8(200), np.bool_(True)],
    "big endian": np.arange(6, dtype=">f8").reshape(2, 3),
    "fortran": np.asfortranarray(np.arange(24, dtype=np.int32).reshape(2, 3, 4)),
    "kinds": (np.zeros(3, np.float64), np.ones(2, np.int16), np.array([True, False]), np.arange(4, dtype=np.uint64)),
    "empty": [np.zeros((0, 17, 2), np.float32), b"", "", (), {}, []],
    "text and bytes": {"key": "välue", b"raw": b"\x00\xff", 7: -(2 ** 63), "big": 2 ** 64 - 1},
    "strings": np.array(["S1", "S11"]),
    "nested": [[[[{"deep": (1, (2, (3,)))}]]]],
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_reads_back_the_same_plain_data(tmp_path, protocol):
    path = with_value(tmp_path, PLAIN_VALUES, protocol)
    assert same(PLAIN_VALUES, npz.read_npz(path)["positions_3d"])


def test_archives_written_by_numpy_read_as_numpy_reads_them(tmp_path):
    positions_3d, positions_2d = factory.positions(frames=3)
    paths = factory.write(tmp_path, positions_3d, positions_2d)
    np.savez(tmp_path / "plain.npz", poses=np.arange(5.0), names=np.array(["a", "bc"]), flags=np.ones(2, bool),
             wrapped=np.array({key: PLAIN_VALUES[key] for key in ("positions", "ordered", "empty")}, dtype=object))
    for path in [*paths, tmp_path / "plain.npz", *sorted(FIXTURE.glob("*.npz"))]:
        with np.load(path, allow_pickle=True) as loaded:
            expected = {name: value.item() if value.dtype.hasobject and value.ndim == 0 else value
                        for name, value in loaded.items()}
        assert same(expected, npz.read_npz(path)), path


def test_synthetic_archives_read_as_numpy_reads_them(tmp_path):
    from iivformer.synthetic import write_dataset

    for path in write_dataset(tmp_path, preset="tiny", seed=0, progress=False):
        with np.load(path, allow_pickle=True) as loaded:
            expected = {name: value.item() if value.ndim == 0 else value for name, value in loaded.items()}
        assert same(expected, npz.read_npz(path))


def test_a_python_2_era_pickle_reads_as_latin1_text(tmp_path):
    """numpy under Python 2 wrote byte strings (BINSTRING) and integer flags for dtypes."""
    data = np.arange(3, dtype="<f8").tobytes()
    legacy_dtype = named("numpy", "dtype") + tuple_of(pickle.SHORT_BINSTRING + b"\x02f8", integer(0), integer(1)) \
        + pickle.REDUCE + tuple_of(integer(3), pickle.SHORT_BINSTRING + b"\x01<", pickle.NONE * 3, integer(-1),
                                   integer(-1), integer(0)) + pickle.BUILD
    legacy_array = array((3,), legacy_dtype, pickle.BINSTRING + struct.pack("<I", len(data)) + data)
    value = pickle.EMPTY_DICT + pickle.SHORT_BINSTRING + b"\x02S1" + legacy_array + pickle.SETITEM
    path = archive(tmp_path / "legacy.npz", positions_3d=npy_member(pickled(value)))
    assert same({"S1": np.arange(3.0)}, npz.read_npz(path)["positions_3d"])


def test_hand_written_pickles_follow_numpy_format():
    """The builders above write what the standard unpickler reads as numpy arrays (run on safe input)."""
    value = pickle.loads(pickled(array((2, 3), dtype("f4"), raw(np.arange(6, dtype="<f4").tobytes()), fortran=True)))
    assert same(np.asfortranarray(np.arange(6, dtype="<f4").reshape(3, 2).T), value.item())


# --- refusals ------------------------------------------------------------------------------------

def refusal(tmp_path, value_ops: bytes, **options) -> str:
    """The one-line DataError message for an archive whose 'positions_2d' pickles `value_ops`."""
    path = archive(tmp_path / "crafted.npz", positions_2d=npy_member(pickled(value_ops)))
    with pytest.raises(DataError) as caught:
        npz.read_npz(path, **options)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message and "in member 'positions_2d'" in message
    return message


F8 = dtype("f8")
LIST_OF_NONE = pickle.EMPTY_LIST + pickle.NONE + pickle.APPEND
# L0 = [None]; L(n+1) = [Ln, Ln]: 31 small lists that a walk would see 2**30 times
SHARED_LISTS = LIST_OF_NONE + pickle.BINPUT + b"\x00" + b"".join(
    pickle.EMPTY_LIST + (pickle.BINGET + bytes([level]) + pickle.APPEND) * 2 + pickle.BINPUT + bytes([level + 1])
    for level in range(30))
CRAFTED = {
    "object dtype over raw bytes (pointers)": (array((2,), OBJECT, raw(bytes(16))),
                                               r"refused: an object dtype array of shape \(2,\) over bytes data"),
    "numeric dtype BUILT into an object one": (array((2,), dtype("f8", "|", flags=63), raw(bytes(16))),
                                               "refused: a dtype state numpy does not write for <f8"),
    "dtype BUILT twice": (F8 + pickle.BINPUT + b"\x00" + pickle.BINGET + b"\x00"
                          + tuple_of(integer(3), text("|"), pickle.NONE * 3, integer(-1), integer(-1), integer(63))
                          + pickle.BUILD, "refused: setting the state of a"),
    "structured dtype": (array((1,), dtype("V8", "|", 8, 1, 16), raw(bytes(8))), r"refused: the call dtype\('V8'"),
    "subarray dtype state": (array((1,), dtype("f4", state=tuple_of(
        integer(3), text("|"), tuple_of(F8, tuple_of(integer(2))), pickle.NONE * 2, integer(16), integer(8),
        integer(0))), raw(bytes(16))), "refused: a dtype state numpy does not write"),
    "zero-size strings": (array((10 ** 9,), dtype("S0", "|", 0, 1, 0), raw(b"")), r"refused: the call dtype\('S0'"),
    "dict subclass given a state": (called(named("collections", "OrderedDict")) + pickle.EMPTY_DICT + pickle.BUILD,
                                    "refused: setting the state of a OrderedDict"),
    "dict given a state": (pickle.EMPTY_DICT + pickle.EMPTY_DICT + pickle.BUILD, "refused: setting the state of a dict"),
    "a million levels of lists": (pickle.EMPTY_LIST * 10 ** 6 + pickle.APPEND * (10 ** 6 - 1),
                                  "refused: nesting deeper than 64 levels"),
    "a million levels of tuples": (pickle.NONE + pickle.TUPLE1 * 10 ** 6, "refused: nesting deeper than 64 levels"),
    "list bomb (shared lists)": (SHARED_LISTS, "refused: a list used in two places"),
    "tuple bomb (shared tuples)": (pickle.NONE + pickle.TUPLE1 + pickle.BINPUT + b"\x00" + pickle.BINGET + b"\x00"
                                   + pickle.TUPLE2, "refused: a tuple used in two places"),
    "a list inside itself": (pickle.EMPTY_LIST + pickle.BINPUT + b"\x00" + pickle.BINGET + b"\x00" + pickle.APPEND,
                             "refused: a list used in two places"),
    "an object array in two places": (array((1,), OBJECT, LIST_OF_NONE) + pickle.BINPUT + b"\x00" + pickle.BINGET
                                      + b"\x00" + pickle.TUPLE2, "refused: a ndarray used in two places"),
    "huge shape over 8 bytes": (array((10 ** 6, 10 ** 6), F8, raw(bytes(8))),
                                r"refused: an array of shape \(1000000, 1000000\) and dtype <f8 over 8 bytes"),
    "huge shape over no data": (array((0, 2 ** 30, 2 ** 30), F8, raw(b"")), "refused: the huge array shape"),
    "negative shape": (array((-1,), F8, raw(b"")), r"refused: the array shape \(-1,\)"),
    "array data short of its shape": (array((3,), F8, raw(bytes(16))), "over 16 bytes of data"),
    "a tuple as a dict key": (pickle.EMPTY_DICT + tuple_of(integer(1)) + integer(2) + pickle.SETITEM,
                              "refused: a dict key of type tuple"),
    "an integer wider than 64 bits": (pickle.LONG1 + b"\x10" + b"\x01" * 16, "refused: an integer wider than 64 bits"),
    "a numpy callable stored as data": (pickle.EMPTY_LIST + named("numpy", "ndarray") + pickle.APPEND,
                                        "refused: a numpy callable stored as data"),
    "numpy.ndarray called": (called(named("numpy", "ndarray"), tuple_of(integer(10 ** 6))),
                             r"refused: the call ndarray"),
    "an object scalar": (called(named("numpy.core.multiarray", "scalar"), OBJECT, raw(bytes(8))),
                         r"refused: the call scalar"),
    "encode with another codec": (called(named("_codecs", "encode"), text("x"), text("rot13")),
                                  "refused: the call encode"),
    "an array used before its data": (called(named("numpy.core.multiarray", "_reconstruct"), named("numpy", "ndarray"),
                                             tuple_of(integer(0)), raw(b"b")), "refused: a numpy array used before"),
    "a missing memo entry": (pickle.BINGET + b"\x07", "refused: a reference to the missing memo entry 7"),
    "object construction (NEWOBJ)": (named("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.NEWOBJ,
                                     "refused: the pickle opcode NEWOBJ"),
    "a persistent id": (pickle.NONE + pickle.BINPERSID, "refused: the pickle opcode BINPERSID"),
    "an extension code": (pickle.EXT1 + b"\x01", "refused: the pickle opcode EXT1"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_pickles_are_refused_with_a_one_line_message(tmp_path, case):
    value_ops, message = CRAFTED[case]
    assert re.search(message, refusal(tmp_path, value_ops))


@pytest.mark.parametrize("payload, message", [
    (pickle.PROTO + b"\x02" + pickle.APPEND + pickle.STOP, "refused: a malformed pickle"),
    (pickle.PROTO + b"\x02" + pickle.NONE + pickle.NONE + pickle.STOP, "refused: a malformed pickle"),
    (pickle.PROTO + b"\x02" + pickle.NONE + pickle.STOP, "refused: a pickled member that is not the array"),
    (pickle.PROTO + b"\x02" + pickle.EMPTY_LIST, "damaged archive .member 'x': ValueError: pickle exhausted"),
    (pickled(pickle.NONE) + b"trailing", "damaged archive .member 'x': ValueError: data after the end"),
])
def test_malformed_pickles_are_refused(tmp_path, payload, message):
    with pytest.raises(DataError, match=message):
        npz.read_npz(archive(tmp_path / "malformed.npz", x=npy_member(payload)))


def test_string_arrays_are_data_the_validation_can_name(tmp_path):
    value = array((2,), dtype("U2", "<", 8, 4, 8), raw("S1S9".encode("utf-32-le")))
    path = archive(tmp_path / "strings.npz", positions_2d=npy_member(pickled(value)))
    assert same(np.array(["S1", "S9"]), npz.read_npz(path)["positions_2d"])


def test_a_numeric_array_may_repeat_but_counts_each_time(tmp_path):
    block = array((131072,), F8, raw(bytes(1 << 20))) + pickle.BINPUT + b"\x00"
    repeated = pickle.EMPTY_LIST + block + pickle.APPEND + (pickle.BINGET + b"\x00" + pickle.APPEND) * 9
    path = archive(tmp_path / "shared.npz", positions_2d=npy_member(pickled(repeated)))
    assert len(npz.read_npz(path)["positions_2d"]) == 10
    message = refusal(tmp_path, repeated, max_bytes=5 << 20)
    assert "refused: arrays holding more than 0.00488 GiB" in message and npz.LIMIT_VARIABLE in message


def test_too_many_objects_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(npz, "MAX_OBJECTS", 1000)
    message = refusal(tmp_path, pickle.EMPTY_LIST + pickle.MARK + pickle.NONE * 2000 + pickle.APPENDS)
    assert "refused: more than 1000 pickled objects" in message


CODE_RUNNING = {
    "GLOBAL os.system": lambda marker: called(named("os", "system"), text(f"touch {marker}")),
    "STACK_GLOBAL posix.system": lambda marker: text("posix") + text("system") + pickle.STACK_GLOBAL
    + tuple_of(text(f"touch {marker}")) + pickle.REDUCE,
    "INST os.system": lambda marker: pickle.MARK + text(f"touch {marker}") + pickle.INST + b"os\nsystem\n",
    "builtins.eval": lambda marker: called(named("builtins", "eval"), text(f"open({str(marker)!r}, 'w')")),
    "a dtype built by os.system": lambda marker: array((1,), called(named("os", "system"), text(f"touch {marker}")),
                                                      raw(bytes(8))),
}


@pytest.mark.parametrize("case", sorted(CODE_RUNNING))
def test_pickles_that_would_run_code_run_nothing(tmp_path, case):
    marker = tmp_path / "code-ran"
    message = refusal(tmp_path, CODE_RUNNING[case](marker))
    assert "refused" in message and not marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_code_running_objects_from_the_standard_pickler_run_nothing(tmp_path, protocol):
    marker = tmp_path / "code-ran"
    path = with_value(tmp_path, {"S1": {"Walking": factory.RunsCode(marker)}}, protocol)
    with pytest.raises(DataError, match=r"refused to load the pickled object posix\.system in member 'positions_3d'"):
        npz.read_npz(path)
    assert not marker.exists()


# --- files and sizes -------------------------------------------------------------------------------

def test_special_files_get_their_own_messages(tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    (tmp_path / "empty.npz").write_bytes(b"")
    cases = {fifo: "not a regular file", tmp_path: r"not a regular file \(is a folder\)",
             tmp_path / "empty.npz": "file is empty", tmp_path / "nowhere.npz": "file not found"}
    if Path("/dev/zero").exists():
        cases[Path("/dev/zero")] = "not a regular file"
    for path, message in cases.items():
        with pytest.raises(DataError, match=f"^{path}: {message}"):
            npz.read_npz(path)


def small_member() -> bytes:
    """A plain .npy member: four float64 numbers."""
    return npy_member(np.arange(4, dtype="<f8").tobytes(), descr="<f8", shape=(4,))


def declaring(path: Path, declared: int) -> Path:
    """An archive whose one small member declares `declared` uncompressed bytes in the zip directory."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("positions_3d.npy", small_member())
        zipped.writestr("other.npy", small_member())
        zipped.getinfo("other.npy").file_size = declared
    return path


def test_a_member_declaring_more_than_the_limit_is_refused_before_inflating(tmp_path):
    path = declaring(tmp_path / "bomb.npz", 20 << 30)
    with pytest.raises(DataError) as caught:
        npz.read_npz(path)
    message = str(caught.value)
    for part in (str(path), "member 'other'", "declares 20 GiB", "limit of 4 GiB", "IIVFORMER_MAX_ARCHIVE_GB="):
        assert part in message
    assert same(np.arange(4.0), npz.read_npz(path, members=("positions_3d",))["positions_3d"])


def test_the_members_read_are_limited_together(tmp_path, monkeypatch):
    path = archive(tmp_path / "two.npz", first=small_member(), second=small_member())
    size = len(small_member())
    assert set(npz.read_npz(path, max_bytes=2 * size)) == {"first", "second"}
    with pytest.raises(DataError, match=re.escape(f"({2 * size} bytes for all members read), over the limit of "
                                                  f"{2 * size - 1} bytes")):
        npz.read_npz(path, max_bytes=2 * size - 1)
    assert list(npz.read_npz(path, members=("second", "absent"), max_bytes=size)) == ["second"]
    monkeypatch.setenv(npz.LIMIT_VARIABLE, f"{1.5 * size / 2 ** 30:.12f}")
    assert list(npz.read_npz(path, members="first")) == ["first"]
    with pytest.raises(DataError, match="over the limit"):
        npz.read_npz(path)
    monkeypatch.setenv(npz.LIMIT_VARIABLE, "lots")
    with pytest.raises(DataError, match="IIVFORMER_MAX_ARCHIVE_GB must be a positive number of GiB, such as 8, not 'lots'"):
        npz.read_npz(path)
    assert len(npz.read_npz(path, max_bytes=10 ** 6)) == 2


def lying_zip(path: Path, inflated: int, declared: int, crc_of_declared: bool) -> Path:
    """A zip whose member inflates to a header plus `inflated` zero bytes but declares `declared`
    bytes of zeros (an array of float64 zeros), with the CRC of the declared or the inflated content."""
    header = npy_member(b"", descr="<f8", shape=(declared // 8,))
    compressor, chunk = zlib.compressobj(9, zlib.DEFLATED, -15), bytes(1 << 24)
    head = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)  # after a full flush, repeatable
    stream = head + block * (inflated // len(chunk)) + compressor.flush()
    crc = zlib.crc32(header)
    for _ in range(declared // len(chunk) if crc_of_declared else inflated // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    name, size = b"positions_3d.npy", len(header) + declared
    local = struct.pack(zipfile.structFileHeader, zipfile.stringFileHeader, 20, 0, 0, 8, 0, 33, crc, len(stream),
                        size, len(name), 0) + name
    central = struct.pack(zipfile.structCentralDir, zipfile.stringCentralDir, 20, 3, 20, 0, 0, 8, 0, 33, crc,
                          len(stream), size, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack(zipfile.structEndArchive, zipfile.stringEndArchive, 0, 0, 1, 1, len(central),
                      len(local) + len(stream), 0)
    path.write_bytes(local + stream + central + end)
    return path


def test_inflating_past_the_declared_size_never_reaches_memory(tmp_path):
    honest_prefix = lying_zip(tmp_path / "prefix.npz", 256 << 20, 16 << 20, crc_of_declared=True)
    assert same(np.zeros(2 << 20), npz.read_npz(honest_prefix)["positions_3d"])
    with pytest.raises(DataError, match="damaged archive .member 'positions_3d': BadZipFile: Bad CRC-32"):
        npz.read_npz(lying_zip(tmp_path / "bomb.npz", 256 << 20, 16 << 20, crc_of_declared=False))


PEAK_OF_READING = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
from iivformer.npz import read_npz
from iivformer.errors import DataError
try:
    read_npz(sys.argv[1])
    outcome = "read"
except DataError as error:
    outcome = str(error)
try:  # this process's own high-water mark (ru_maxrss would include the parent's, inherited through exec)
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(peak * 1024, outcome)
"""


def peak_memory_of_reading(path: Path) -> tuple:
    """(peak resident bytes, outcome) of read_npz(path) in a fresh process limited to 6 GiB of address space."""
    code = PEAK_OF_READING
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                            cwd=REPOSITORY, env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    assert result.returncode == 0, result.stderr
    peak, outcome = result.stdout.split(" ", 1)
    return int(peak), outcome.strip()


def bombs(tmp_path) -> dict:
    """Crafted files that ask for far more memory than they hold, and what reading them must say."""
    shared_array = pickle.EMPTY_LIST + array((131072,), F8, raw(bytes(1 << 20))) + pickle.BINPUT + b"\x00" \
        + pickle.APPEND + (pickle.BINGET + b"\x00" + pickle.APPEND) * 20000
    return {
        "zip bomb declaring 20 GB": (declaring(tmp_path / "declared.npz", 20 << 30), "declares 20 GiB"),
        "zip bomb inflating 4 GiB past a small declared size": (
            lying_zip(tmp_path / "lying.npz", 4 << 30, 1 << 20, crc_of_declared=False), "Bad CRC-32"),
        "list bomb (2**30 references)": (archive(tmp_path / "list.npz", positions_2d=npy_member(pickled(SHARED_LISTS))),
                                         "a list used in two places"),
        "one 1 MiB array in 20001 places": (
            archive(tmp_path / "array.npz", positions_2d=npy_member(pickled(shared_array))),
            "arrays holding more than 4 GiB"),
        "a million levels of lists": (archive(tmp_path / "deep.npz", positions_2d=npy_member(pickled(
            pickle.EMPTY_LIST * 10 ** 6 + pickle.APPEND * (10 ** 6 - 1)))), "nesting deeper than 64 levels"),
    }


def test_crafted_files_are_refused_with_bounded_memory(tmp_path):
    peaks = {}
    for case, (path, message) in bombs(tmp_path).items():
        peak, outcome = peak_memory_of_reading(path)
        assert message in outcome, (case, outcome)
        assert peak < PEAK_LIMIT, (case, peak)
        peaks[case] = peak
    print("peak resident memory:", {case: f"{peak / 2 ** 20:.0f} MiB" for case, peak in peaks.items()})
