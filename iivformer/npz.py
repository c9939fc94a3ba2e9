"""Safe reading of .npz archives: plain data only, within a memory limit.

:func:`read_npz` reads .npz members; pickled ones (the VideoPose3D dictionaries) go through
:class:`PlainDataReader`, which interprets the pickle opcodes without running anything and builds
only numbers, strings, bytes, lists, tuples, dicts, OrderedDicts, numpy scalars and arrays of numbers,
booleans or fixed-width strings. Limits: the members read declare at most the byte limit of
uncompressed data in all (checked before inflating; never inflated past what they declare); an
array's data is exactly prod(shape) x item size bytes; a member's arrays (one in several places
counted each time) hold at most the byte limit; at most MAX_DEPTH levels of nesting and MAX_OBJECTS
pickle operations; no list, dict, tuple or object array in two places (no shared or recursive data).

Environment: IIVFORMER_MAX_ARCHIVE_GB, the byte limit in gigabytes of 2**30 bytes (default 4; any
positive number, such as 0.5 or 12). ``read_npz(path, max_bytes=...)`` overrides it.
"""
import collections
import math
import os
import pickle
import pickletools
import re
import zipfile
from pathlib import Path

import numpy as np

from iivformer.errors import DataError, one_line
from iivformer.files import open_regular_file

LIMIT_VARIABLE = "IIVFORMER_MAX_ARCHIVE_GB"
DEFAULT_MAX_GB = 4
MAX_DEPTH = 64
MAX_OBJECTS = 2_000_000
MAX_ELEMENTS = 2 ** 40  # product of the non-zero dimensions of one array
READ_STEP = 1 << 20     # most bytes inflated by one read of a zip member
SMALL_READ = 1 << 16    # longer reads return a bytearray, which arrays then use without a copy
ARRAY_KINDS = "biufUS"  # booleans, integers, floats, fixed-width bytes and text

_GLOBALS = {(module.replace("*", core), name): kind for module, name, kind in (
    ("numpy.*.multiarray", "_reconstruct", "reconstruct"), ("numpy.*.multiarray", "scalar", "scalar"),
    ("numpy.*.numeric", "_frombuffer", "frombuffer"), ("numpy", "ndarray", "ndarray"), ("numpy", "dtype", "dtype"),
    ("collections", "OrderedDict", "ordered_dict"), ("_codecs", "encode", "encode"), ("builtins", "bytes", "bytes"),
    ("__builtin__", "bytes", "bytes")) for core in ("core", "_core")}  # bytes() and encode(): pickle protocols 0-2
_TYPESTR = re.compile(r"(?:[biuf]\d{1,2}|[US][1-9]\d{0,8}|O[48])\Z")
_VALUE_OPCODES = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING",
                  "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
                  "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
_NEW_VALUES = {"NONE": lambda: None, "NEWTRUE": lambda: True, "NEWFALSE": lambda: False,
               "EMPTY_LIST": list, "EMPTY_DICT": dict, "EMPTY_TUPLE": tuple}
_ITEM_COUNTS = {"APPEND": 1, "SETITEM": 2, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3,
                "LIST": "mark", "DICT": "mark", "TUPLE": "mark", "APPENDS": "mark", "SETITEMS": "mark"}
_ADVICE = f"if the file is trusted, raise the limit with the environment variable {LIMIT_VARIABLE}=<gigabytes>"


class RefusedPickle(pickle.UnpicklingError):
    """A pickle holding something other than plain data; the message says what was refused."""


def _refuse(what: str):
    """Raise RefusedPickle saying what was refused."""
    raise RefusedPickle(f"refused: {what}")


def _short(value, nested=True) -> str:
    """A short description of a value for a message (never the repr of a large one)."""
    if type(value) is tuple and nested:
        items = [_short(item, False) for item in value[:9]] + ["..."] * (len(value) > 9)
        return "(" + ", ".join(items) + ("," if len(value) == 1 else "") + ")"
    plain = value is None or isinstance(value, (bool, int, float, np.dtype, str, bytes, bytearray))
    return repr(value[:40] if isinstance(value, (str, bytes, bytearray)) else value) if plain else type(value).__name__


def _same(value, expected) -> bool:
    """Equal in type and value (tuples item by item), never broadcasting a numpy comparison."""
    if type(expected) is tuple:
        return type(value) is tuple and len(value) == len(expected) and all(map(_same, value, expected))
    return type(value) is type(expected) and value == expected


class _Token:
    """A callable a pickle names (kind "call", `base` which), or a dtype or array a REDUCE made, awaiting its BUILD."""

    def __init__(self, kind: str, base=None):
        self.kind, self.base, self.value = kind, base, None


def _is_call(value, which=None) -> bool:
    """Whether `value` is a callable token (of kind `which`, when given)."""
    return isinstance(value, _Token) and value.kind == "call" and which in (None, value.base)


def _resolved(value):
    """The dtype or array a token became; refuses one whose BUILD has not come yet."""
    if not isinstance(value, _Token) or value.kind == "call":
        return value
    return value.value if value.value is not None else _refuse(f"a numpy {value.kind} used before its state was set")


def _checked_shape(shape) -> tuple:
    """A shape: a tuple of at most 32 non-negative integers whose product stays sane."""
    if not (type(shape) is tuple and len(shape) <= 32 and all(type(size) is int and size >= 0 for size in shape)):
        _refuse(f"the array shape {_short(shape)}")
    if math.prod(max(size, 1) for size in shape) > MAX_ELEMENTS:
        _refuse(f"the huge array shape {_short(shape)}")
    return shape


def _numeric_array(data, dtype, shape, fortran: bool) -> np.ndarray:
    """A writable array of a plain dtype over exactly prod(shape) * itemsize bytes of data."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in ARRAY_KINDS or dtype.fields or dtype.subdtype:
        _refuse(f"an array of dtype {_short(dtype)}")
    data = data.encode("latin-1") if isinstance(data, str) else data  # Python 2 byte strings
    if not isinstance(data, (bytes, bytearray)):
        _refuse(f"array data of type {type(data).__name__}")
    count = math.prod(_checked_shape(shape))
    if count * dtype.itemsize != len(data):
        _refuse(f"an array of shape {shape} and dtype {dtype.str} over {len(data)} bytes of data")
    array = np.frombuffer(data, dtype=dtype, count=count) if count else np.empty(0, dtype)
    array = array if array.flags.writeable else array.copy()
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def _call(kind: str, args: tuple, count_bytes):
    """The value of an allowed call (REDUCE) with plain arguments; refuses anything else."""
    size = len(args)
    if kind == "reconstruct" and size == 3 and _is_call(args[0], "ndarray") and _same(args[1], (0,)) \
            and (_same(args[2], b"b") or _same(args[2], "b")):
        return _Token("array")
    if kind == "dtype" and size == 3 and isinstance(args[0], str) and _TYPESTR.match(args[0]) \
            and (_same(args[1], False) or _same(args[1], 0)) and type(args[2]) in (bool, int):
        try:
            return _Token("dtype", np.dtype(args[0]))
        except TypeError:
            _refuse(f"the dtype {args[0]!r}")
    if kind == "scalar" and size == 2 and isinstance(args[0], np.dtype) and args[0].kind in "biuf":
        count_bytes(args[0].itemsize)
        return _numeric_array(args[1], args[0], (), False)[()]
    if kind == "frombuffer" and size == 4 and (_same(args[3], "C") or _same(args[3], "F")):
        array = _numeric_array(args[0], args[1], args[2], args[3] == "F")
        count_bytes(array.nbytes)
        return array
    if kind in ("ordered_dict", "bytes") and args == ():
        return collections.OrderedDict() if kind == "ordered_dict" else b""
    if kind == "encode" and size == 2 and all(type(arg) is str for arg in args) and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin-1")
    _refuse(f"the call {kind}{_short(args)} (plain numbers, booleans and strings only)")


class PlainDataReader:
    """Interprets a pickle opcode stream without running it, building plain data only (module limits)."""

    def __init__(self, stream, max_array_bytes: int):
        self.stream, self.max_array_bytes, self.array_bytes = stream, max_array_bytes, 0
        self.stack, self.marks, self.memo = [], [], {}
        self.placed, self.depths = {}, {}  # id -> value inside a container; id -> (container, nesting depth)

    def load(self):
        """Run the opcodes up to STOP; returns the value the pickle describes."""
        for count, (opcode, arg, _) in enumerate(pickletools.genops(self.stream), 1):
            if count > MAX_OBJECTS:
                _refuse(f"more than {MAX_OBJECTS} pickled objects")
            self._run(opcode.name, arg)
        if len(self.stack) != 1 or self.marks:
            _refuse("a malformed pickle (values left on the stack)")
        return _resolved(self.stack[0])

    def _run(self, name: str, arg):
        """Apply one opcode to the stack and the memo."""
        if name in _VALUE_OPCODES:
            if isinstance(arg, int) and abs(arg) >= 2 ** 64:
                _refuse("an integer wider than 64 bits")
            self.stack.append(arg)
        elif name in _NEW_VALUES:
            self.stack.append(_NEW_VALUES[name]())
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            self.memo[len(self.memo) if name == "MEMOIZE" else arg] = self._pop(keep=True)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            value = self.memo[arg] if arg in self.memo else _refuse(f"a reference to the missing memo entry {arg}")
            if isinstance(value, (list, dict)):  # other containers are checked where they are placed
                _refuse(f"a {type(value).__name__} used in two places (a shared or recursive structure)")
            self.stack.append(value)
        elif name == "MARK":
            self.marks.append(len(self.stack))
        elif name in _ITEM_COUNTS:
            self._fill(name, self._pop(_ITEM_COUNTS[name]))
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            module, qualified = arg.split(" ", 1) if name == "GLOBAL" else self._pop(2)
            if not (isinstance(module, str) and isinstance(qualified, str)):
                _refuse("a global name that is not text")
            if (module, qualified) not in _GLOBALS:
                raise RefusedPickle(f"refused to load the pickled object {module[:100]}.{qualified[:100]}")
            self.stack.append(_Token("call", _GLOBALS[module, qualified]))
        elif name == "REDUCE":
            call, args = self._pop(2)
            if not _is_call(call) or type(args) is not tuple:
                _refuse(f"calling a {type(_resolved(call)).__name__} with {type(args).__name__} arguments")
            self._take([args], as_data=False)
            self.stack.append(_call(call.base, args, self._count_bytes))
        elif name == "BUILD":
            self._build(self._take(self._pop(1), as_data=False)[0][0], self._pop(keep=True))
        elif name not in ("PROTO", "FRAME", "STOP"):
            _refuse(f"the pickle opcode {name}, which plain data does not need")

    def _pop(self, count=None, keep=False):
        """The top value (removed unless `keep`), a list of the top `count`, or for "mark" those above the MARK."""
        if count == "mark":
            start = self.marks.pop() if self.marks else _refuse("a malformed pickle (no MARK)")
            items, self.stack[start:] = self.stack[start:], []
            return items
        if count is not None:
            return [self._pop() for _ in range(count)][::-1]
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            _refuse("a malformed pickle (empty stack)")
        return self.stack[-1] if keep else self.stack.pop()

    def _take(self, values, as_data: bool) -> tuple:
        """Resolve the values going into a container (or serving as call arguments) and mark
        them as placed; returns (values, the nesting depth their container needs)."""
        taken, depth = [], 0
        for value in map(_resolved, values):
            if as_data and (_is_call(value) or type(value) is tuple and any(map(_is_call, value))):
                _refuse("a numpy callable stored as data")
            numeric = isinstance(value, np.ndarray) and value.dtype.kind != "O"
            if id(value) in self.placed and not numeric:
                _refuse(f"a {type(value).__name__} used in two places (a shared or recursive structure)")
            if numeric and id(value) in self.placed:
                self._count_bytes(value.nbytes)  # a numeric array in one more place
            elif isinstance(value, (list, dict, np.ndarray)) or (type(value) is tuple and value):
                self.placed[id(value)] = value
                depth = max(depth, self.depths.get(id(value), (None, 0))[1])
            taken.append(value)
        return taken, depth + 1

    def _fill(self, name: str, items: list):
        """Build a list, dict or tuple of `items`, or add them to the list or dict below them."""
        if name.startswith("TUPLE"):
            taken, depth = self._take(items, as_data=False)
            container = tuple(taken)  # callables in a tuple: call arguments, never nested (nor data)
            if any(type(item) is tuple and any(map(_is_call, item)) for item in taken):
                _refuse("a numpy callable stored as data")
        elif name in ("LIST", "APPEND", "APPENDS"):
            container = [] if name == "LIST" else self._pop(keep=True)
            if type(container) is not list:
                _refuse(f"appending to a {type(container).__name__}")
            taken, depth = self._take(items, as_data=True)
            container.extend(taken)
        else:
            container = {} if name == "DICT" else self._pop(keep=True)
            odd_keys = [type(key).__name__ for key in items[0::2] if not isinstance(key, (str, int, bytes))]
            if not isinstance(container, dict) or len(items) % 2 or odd_keys:
                _refuse(f"a dict key of type {odd_keys[0]}" if odd_keys else "setting items of a non-dict")
            values, depth = self._take(items[1::2], as_data=True)
            container.update(zip(items[0::2], values))
        if name in ("LIST", "DICT") or name.startswith("TUPLE"):
            self.stack.append(container)
        if depth > MAX_DEPTH:
            _refuse(f"nesting deeper than {MAX_DEPTH} levels")
        self.depths[id(container)] = (container, max(depth, self.depths.get(id(container), (None, 0))[1]))

    def _build(self, state, target):
        """Give a pending dtype its byte order, or a pending array its shape, dtype and data (raw
        bytes, or for the object arrays numpy wraps pickled dicts in, a list of plain values)."""
        if not (isinstance(target, _Token) and target.kind != "call" and target.value is None):
            _refuse(f"setting the state of a {type(_resolved(target)).__name__} (pickle BUILD)")
        if target.kind == "dtype":  # numpy's state: (3, byte order, None, None, None, -1, -1, flags)
            expected = target.base.__reduce__()[2]
            if not (type(state) is tuple and len(state) == 8 and _same(state[0], 3) and _same(state[2:], expected[2:])
                    and any(_same(state[1], order) for order in (("|",) if expected[1] == "|" else ("<", ">", "=")))):
                _refuse(f"a dtype state numpy does not write for {target.base.str}: {_short(state)}")
            target.value = np.dtype(state[1] + target.base.str[1:]) if state[1] in "<>" else target.base
            return
        if not (type(state) is tuple and len(state) == 5 and _same(state[0], 1)
                and any(_same(state[3], flag) for flag in (False, True, 0, 1))):
            _refuse(f"an array state numpy does not write ({_short(state)})")
        _, shape, dtype, fortran, data = state
        if isinstance(dtype, np.dtype) and dtype.kind == "O":
            if type(data) is not list or math.prod(_checked_shape(shape)) != len(data):
                _refuse(f"an object dtype array of shape {_short(shape)} over {type(data).__name__} data")
            array = np.fromiter(data, dtype=object, count=len(data)).reshape(shape, order="F" if fortran else "C")
            self.depths[id(array)] = (array, self.depths.get(id(data), (None, 0))[1])
        else:
            array = _numeric_array(data, dtype, shape, bool(fortran))
        self._count_bytes(array.nbytes)
        target.value = self.stack[-1] = array

    def _count_bytes(self, count: int):
        """Add `count` array bytes to the member's total, refusing a total over the limit."""
        self.array_bytes += count
        if self.array_bytes > self.max_array_bytes:
            _refuse(f"arrays holding more than {_size_text(self.max_array_bytes)} ({_ADVICE})")


class _MemberStream:
    """The inflated bytes of one zip member, read in bounded steps and never past its declared size."""

    def __init__(self, raw, size: int):
        self.raw, self.left = raw, size

    def read(self, count=-1):
        """Up to `count` bytes (all that is left for -1); a bytearray when over SMALL_READ."""
        count = self.left if count is None or count < 0 else min(count, self.left)
        data = bytearray() if count > SMALL_READ else b""
        while len(data) < count and (step := self.raw.read(min(READ_STEP, count - len(data)))):
            data += step
        self.left -= len(data)
        return data

    def readline(self, limit=-1):
        """One line (of a text pickle opcode), at most what is left of the member."""
        line = self.raw.readline(self.left if limit is None or limit < 0 else min(limit, self.left))
        self.left -= len(line)
        return line


def byte_limit(max_bytes=None) -> int:
    """The most uncompressed bytes to inflate from one archive: `max_bytes`, else the
    IIVFORMER_MAX_ARCHIVE_GB environment variable (gigabytes of 2**30 bytes), else 4 GiB."""
    if max_bytes is not None:
        return int(max_bytes)
    text = os.environ.get(LIMIT_VARIABLE, "").strip() or str(DEFAULT_MAX_GB)
    try:
        gigabytes = float(text)
    except ValueError:
        gigabytes = math.nan
    if not (math.isfinite(gigabytes) and gigabytes > 0):
        raise DataError(f"{LIMIT_VARIABLE} must be a positive number of GiB, such as 8, not {text!r}")
    return int(gigabytes * 2 ** 30)


def _size_text(count: int) -> str:
    """A byte count for people: 20 GiB, 0.25 GiB, or 5000 bytes below 1 MiB."""
    return f"{count / 2 ** 30:.3g} GiB" if count >= 2 ** 20 else f"{count} bytes"


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> np.ndarray:
    """One .npy member: plain arrays directly, pickled object arrays through PlainDataReader."""
    with archive.open(info) as raw:
        stream = _MemberStream(raw, info.file_size)
        version = np.lib.format.read_magic(stream)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(stream)
        if not dtype.hasobject:
            return _numeric_array(stream.read(), dtype, tuple(shape), fortran)
        value = PlainDataReader(stream, limit).load()
        if not isinstance(value, np.ndarray) or value.shape != tuple(shape):
            _refuse("a pickled member that is not the array its header describes")
        if stream.read(1):
            raise ValueError("data after the end of the pickle")
    return value


def read_npz(path, members=None, max_bytes=None) -> dict:
    """Read the arrays of an .npz archive safely: {name: array}, 0-d object arrays unwrapped to
    their content (the pickled dictionaries of the VideoPose3D format). `members`: the names to
    read (others are not inflated, absent ones left out), None for all; `max_bytes`: see byte_limit.
    Raises DataError, one line naming the file (and member), for a missing, empty, non-regular,
    damaged or oversized file and for pickled objects other than plain data."""
    path, limit = Path(path), byte_limit(max_bytes)
    wanted = (members,) if isinstance(members, str) else members
    try:
        with open_regular_file(path, DataError, "an .npz archive") as file, zipfile.ZipFile(file) as archive:
            listed = [(info.filename[:-4] if info.filename.endswith(".npy") else info.filename, info)
                      for info in archive.infolist()]
            if not listed:
                raise DataError(f"{path}: the archive holds no arrays")
            chosen = [(name, info) for name, info in listed if wanted is None or name in wanted]
            total = sum(info.file_size for _, info in chosen)
            if total > limit:  # refused before inflating anything
                name, info = max(chosen, key=lambda pair: pair[1].file_size)
                raise DataError(f"{path}: member {name!r} declares {_size_text(info.file_size)} uncompressed "
                                f"({_size_text(total)} for all members read), over the limit of "
                                f"{_size_text(limit)}; {_ADVICE}")
            contents = {}
            for name, info in chosen:
                try:
                    value = _read_member(archive, info, limit)
                except pickle.UnpicklingError as error:
                    raise DataError(f"{path}: {one_line(error)} in member {name!r}; only plain arrays, dicts, "
                                    "lists, strings and numbers are accepted") from None
                except Exception as error:  # zlib, CRC, EOF and header errors of a damaged member
                    raise DataError(f"{path}: damaged archive (member {name!r}: {type(error).__name__}: "
                                    f"{one_line(error)[:200]})") from None
                contents[name] = value.item() if value.dtype.hasobject and value.ndim == 0 else value
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not an .npz archive (not a zip file, or truncated)") from None
    except DataError:
        raise
    except Exception as error:  # a damaged zip directory
        raise DataError(f"{path}: damaged archive ({type(error).__name__}: {one_line(error)[:200]})") from None
    return contents
