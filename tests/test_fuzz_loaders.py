"""Property: whatever bytes or pickle structure an archive holds, the loader returns plain data
(equal to what was pickled, when nothing was changed) or raises only DataError, with one line."""
import io
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import archive_factory as factory
from test_npz import same
from iivformer import archives
from iivformer.errors import DataError


@pytest.fixture(scope="module")
def valid_archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("valid")
    positions_3d, positions_2d = factory.positions(frames=4, extra_2d=1)
    # keep it small: two subjects, one take each; stored both compressed and not
    positions_3d = {s: {"Walking": positions_3d[s]["Walking"]} for s in ("S1", "S9")}
    positions_2d = {s: {"Walking": positions_2d[s]["Walking"]} for s in ("S1", "S9")}
    path_3d, path_2d = factory.write(folder, positions_3d, positions_2d)
    plain = folder / "plain_2d.npz"
    np.savez(plain, positions_2d=positions_2d, metadata=factory.METADATA)
    return [path_3d.read_bytes(), path_2d.read_bytes(), plain.read_bytes()]


mutations = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), edits=mutations, cut=st.one_of(st.none(), st.floats(0, 1)))
def test_mutated_archives_raise_only_data_errors(tmp_path, valid_archives, which, edits, cut):
    content = bytearray(valid_archives[which])
    for position, value in edits:
        content[int(position * len(content))] = value
    if cut is not None:
        content = content[: int(cut * len(content))]
    path = tmp_path / "mutated.npz"
    path.write_bytes(bytes(content))
    try:
        loaded = archives.read_npz(path)
        if "positions_3d" in loaded:
            archives.load_positions_3d(path)
        else:
            archives.load_positions_2d(path)
    except DataError as error:
        message = str(error)
        assert message.startswith(str(path)) and "\n" not in message


# --- the structure of the pickle, not only its bytes ----------------------------------------------

DTYPES = ["<f4", ">f8", "<i8", "|u1", "|b1", ">i2", "<u4"]
_scalars = st.sampled_from(DTYPES).flatmap(
    lambda name: hnp.from_dtype(np.dtype(name), allow_nan=False).map(np.dtype(name).type))
_arrays = st.tuples(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
                    st.booleans()).flatmap(
    lambda spec: hnp.arrays(np.dtype(spec[0]), spec[1]).map(np.asfortranarray if spec[2] else np.ascontiguousarray))
_leaves = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 64 - 1), st.floats(allow_nan=False),
                    st.text(max_size=8), st.binary(max_size=8), _arrays, _scalars)
_keys = st.one_of(st.text(max_size=6), st.integers(-3, 3), st.binary(max_size=3))
plain_trees = st.recursive(_leaves, lambda children: st.one_of(
    st.lists(children, max_size=4), st.lists(children, max_size=3).map(tuple),
    st.dictionaries(_keys, children, max_size=4), st.dictionaries(_keys, children, max_size=3).map(OrderedDict)),
    max_leaves=12)


def pickled_member(tree, protocol: int) -> bytes:
    """The .npy member np.save writes for `tree`: a 0-d object array, pickled."""
    wrapper = np.empty((), dtype=object)
    wrapper[()] = tree
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    return header.getvalue() + pickle.dumps(wrapper, protocol=protocol)


def write_member(path, member: bytes):
    """An .npz holding `member` as positions_3d.npy."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("positions_3d.npy", member)
    return path


def assert_finite_tree(value, limit=100_000):
    """Walk a result without recursion: every container is met once (no shared or recursive parts)."""
    seen, pending = set(), [value]
    while pending:
        item = pending.pop()
        if isinstance(item, np.ndarray) and item.dtype != object:
            continue
        if isinstance(item, (list, tuple, dict, np.ndarray)) and len(item):
            assert id(item) not in seen and len(seen) < limit
            seen.add(id(item))
            pending.extend(item.values() if isinstance(item, dict) else item.flat if isinstance(item, np.ndarray)
                           else item)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=plain_trees, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_plain_trees_read_back_equal_with_every_protocol(tmp_path, tree, protocol):
    path = write_member(tmp_path / "tree.npz", pickled_member(tree, protocol))
    assert same(tree, archives.read_npz(path)["positions_3d"])


TYPESTRS = ["O8", "V8", "f8", "<f4", "i1", "U2", "S0", "S3", "b1", "c16", "M8", "f3", "O4", "u16", "f16"]


def mutated(payload: bytes, data) -> bytes:
    """`payload` with one opcode-level change: an opcode swapped, a dtype string or an integer (a
    shape, a length, a flag) replaced, a memo reference repeated or added, an opcode removed or repeated."""
    spans = [(position, opcode, arg) for opcode, arg, position in pickletools.genops(payload)]
    ends = [position for position, _, _ in spans[1:]] + [len(payload)]
    index = data.draw(st.integers(0, len(spans) - 1), label="opcode index")
    start, end, (_, opcode, arg) = spans[index][0], ends[index], spans[index]
    change = data.draw(st.sampled_from(["opcode", "typestr", "integer", "get", "delete", "repeat"]), label="change")
    if change == "opcode":
        code = data.draw(st.sampled_from([op.code.encode("latin-1") for op in pickletools.opcodes]), label="new opcode")
        return payload[:start] + code + payload[start + 1:]
    if change == "typestr" or (change == "integer" and not isinstance(arg, int)):
        candidates = [i for i, (_, op, value) in enumerate(spans) if isinstance(value, str) and len(value) <= 4]
        if candidates:
            start, end = spans[candidates[index % len(candidates)]][0], ends[candidates[index % len(candidates)]]
        text = data.draw(st.sampled_from(TYPESTRS), label="typestr").encode()
        return payload[:start] + pickle.BINUNICODE + struct.pack("<I", len(text)) + text + payload[end:]
    if change == "integer":
        value = data.draw(st.sampled_from([-1, 0, 1, 2, 3, 63, 2 ** 31 - 1, 10 ** 6]), label="integer")
        return payload[:start] + pickle.BININT + struct.pack("<i", value) + payload[end:]
    if change == "get":
        memo_index = data.draw(st.integers(0, 40), label="memo index")
        reference = pickle.BINGET + bytes([memo_index])
        extra = data.draw(st.sampled_from([b"", pickle.APPEND, pickle.TUPLE2, pickle.SETITEM]), label="then")
        return payload[:end] + reference + extra + payload[end:]
    if change == "delete":
        return payload[:start] + payload[end:]
    return payload[:end] + payload[start:end] + payload[end:]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=plain_trees, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL), data=st.data())
def test_mutated_pickle_structures_raise_only_data_errors(tmp_path, tree, protocol, data):
    member = pickled_member(tree, protocol)
    header_size = member.index(b"\n") + 1
    payload = mutated(member[header_size:], data)
    path = write_member(tmp_path / "mutated.npz", member[:header_size] + payload)
    try:
        contents = archives.read_npz(path)
    except DataError as error:
        message = str(error)
        assert message.startswith(str(path)) and "\n" not in message
    else:
        assert_finite_tree(contents)
