"""Writing files safely: every output of the workbench goes through here.

- :func:`check_writable` says, before any work starts, whether an output path can be written: its
  folder exists and is writable, and it is absent or a regular file. Device nodes (``/dev/null``),
  FIFOs, sockets and folders are refused. A symbolic link is followed: the file it points to is
  what gets written (and must itself be absent or a regular file).
- :func:`check_distinct` refuses an output that is one of the inputs or another output;
  :func:`check_output_paths` checks a training run's checkpoint and log both ways.
- :func:`atomic_write` writes to a temporary file beside the target, flushes it to disk and renames
  it over the target: a run killed at any moment leaves the old file or the new one, never a
  half-written one; temporary files that a killed run left behind are removed by the next write.
- :func:`exclusive_lock` keeps two runs from writing the same file at once.
"""
import errno
import fcntl
import functools
import hashlib
import json
import os
import stat
import uuid
from contextlib import contextmanager
from pathlib import Path

from iivformer.errors import IIVFormerError, printable


def check_writable(path, what: str = "output") -> Path:
    """The path to write for `path` (symbolic links followed); one IIVFormerError line naming `what`
    and the path unless it can be written."""
    path = Path(path)
    target = path.resolve() if path.is_symlink() else path
    folder = target.parent
    if not folder.is_dir():
        raise IIVFormerError(f"{what} {path}: the folder {folder} does not exist")
    if target.exists() or target.is_symlink():
        mode = target.stat().st_mode if target.exists() else 0
        if stat.S_ISDIR(mode):
            raise IIVFormerError(f"{what} {path}: is a folder")
        if not stat.S_ISREG(mode):
            raise IIVFormerError(f"{what} {path}: not a regular file (a device, FIFO, socket or broken link); "
                                 "write to a regular file")
        if not os.access(target, os.W_OK):
            raise IIVFormerError(f"{what} {path}: not writable")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise IIVFormerError(f"{what} {path}: the folder {folder} is not writable")
    return target


def check_output_paths(checkpoint_path, log_path, inputs: dict = None) -> tuple:
    """A training run's (checkpoint, log) as paths if both can be written, differ, and are none of
    the `inputs` ({name: path}); one IIVFormerError line otherwise. Run before any data is loaded."""
    check_writable(checkpoint_path, "checkpoint")
    check_writable(log_path, "log")
    check_distinct({"checkpoint": checkpoint_path, "log": log_path}, inputs)
    return Path(checkpoint_path), Path(log_path)


def check_distinct(outputs: dict, inputs: dict = None) -> None:
    """Refuse (one line) an output that is another output or one of the inputs. `outputs` and
    `inputs` map what the user calls a path (a flag such as "--model_path") to it; None is skipped."""
    written = {}
    for name, path in outputs.items():
        if path is None:
            continue
        key = _identity(Path(path))
        if key in written:
            raise IIVFormerError(f"{name} and {written[key]} are the same file {path}: give each output its own file")
        written[key] = name
    for name, path in (inputs or {}).items():
        key = None if path is None else _identity(Path(path))
        if key in written:
            raise IIVFormerError(f"{written[key]} {path} is the input {name}: writing it would replace the input")


def _identity(path: Path):
    """What makes two paths the same file: device and inode when it exists, else the resolved path."""
    try:
        info = path.stat()
        return (info.st_dev, info.st_ino)
    except OSError:
        return str(path.resolve())


def atomic_write(path, write) -> Path:
    """Call ``write(temporary_path)``, make the bytes durable, then rename them to `path` (symbolic
    links followed). An OSError (a full disk, a vanished folder) becomes one IIVFormerError line;
    the previous file at `path` is then unchanged."""
    target = check_writable(path)
    _remove_stale_temporaries(target)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except OSError as error:
        raise IIVFormerError(f"cannot write {path}: {error.strerror or error}; "
                             "the previous file, if any, is unchanged") from None
    finally:
        if temporary.exists():
            temporary.unlink()
    _sync_folder(target.parent)
    return Path(path)


def _remove_stale_temporaries(target: Path) -> None:
    """Remove the temporary files of `target` whose writing process no longer runs."""
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        parts = leftover.name[len(target.name) + 2:].split(".")
        if parts and parts[0].isdigit() and not _running(int(parts[0])):
            leftover.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); harmless to skip where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def sha256(path) -> str:
    """SHA-256 of a file, read in 1 MB blocks; remembered while the file's size and time are unchanged
    (an archive is hashed once for its pair check and its provenance); a replaced file is a new inode."""
    path = Path(path).resolve()
    status = path.stat()
    return _sha256(path, status.st_ino, status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: Path, inode: int, size: int, modified_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_regular_file(path, error=IIVFormerError, expected: str = "a file"):
    """`path` opened for binary reading if it is a non-empty regular file, never blocking on a
    FIFO; else one `error` line: file not found, is empty, or is not a regular file (a folder, a
    device such as /dev/zero, a FIFO), saying what was `expected`."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error_found:
        missing = isinstance(error_found, FileNotFoundError)
        raise error(f"{path}: " + ("file not found" if missing else f"cannot read ({error_found.strerror})")) from None
    status = os.fstat(descriptor)
    if stat.S_ISREG(status.st_mode) and status.st_size > 0:
        return os.fdopen(descriptor, "rb")
    os.close(descriptor)
    kind = ("file is empty" if stat.S_ISREG(status.st_mode)
            else "not a regular file" + (" (is a folder)" if stat.S_ISDIR(status.st_mode) else ""))
    raise error(f"{path}: {kind}; expected {expected}")


def read_limited(path, limit: int, expected: str, hint: str = None, error=IIVFormerError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see :func:`open_regular_file`); one
    `error` line for a larger one, ending with `hint` (default: what was `expected`)."""
    with open_regular_file(path, error, expected) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
        raise error(f"{printable(path)}: larger than {size}; {hint or 'is this ' + expected + '?'}")
    return data


def write_text(path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def write_json(path, value) -> Path:
    """Write `value` as indented JSON to `path` atomically. NaN and infinity are refused (strict
    JSON parsers reject them), as a ValueError: a bug in the caller."""
    return write_text(path, json.dumps(value, indent=1, allow_nan=False) + "\n")


@contextmanager
def exclusive_lock(path, what: str = "output"):
    """Hold an advisory lock on `path` (a hidden ``.<name>.lock`` file beside it) for the block; a
    second holder gets one IIVFormerError line at once instead of waiting or both writing."""
    target = Path(path).resolve()
    lock_path = target.with_name(f".{target.name}.lock")
    stream = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise IIVFormerError(f"{what} {path}: another run is writing it now; wait for it to end "
                                 "or choose another path") from None
        yield
    finally:
        stream.close()
