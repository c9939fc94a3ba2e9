"""Writing files safely: every output of the workbench goes through here.

- :func:`check_writable` says, before any work starts, whether an output path can be written
  (its folder exists and is writable, it is not a folder).
- :func:`atomic_write` writes to a temporary file in the same folder, flushes it to disk and
  renames it over the target: a run killed at any moment leaves the old file or the new one,
  never a half-written one.
- :func:`write_text` and :func:`write_json` are the two common cases of it.
"""
import json
import os
import uuid
from pathlib import Path

from iivformer.errors import IIVFormerError


def check_writable(path, what: str = "output") -> Path:
    """Raise IIVFormerError (one line naming `what` and the path) unless `path` can be written."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise IIVFormerError(f"{what} {path}: the folder {folder} does not exist")
    if path.is_dir():
        raise IIVFormerError(f"{what} {path}: is a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise IIVFormerError(f"{what} {path}: not writable")
    return path


def atomic_write(path, write) -> Path:
    """Call ``write(temporary_path)``, make the bytes durable, then rename them to `path`.

    The temporary file sits beside `path` (same file system, so the rename is atomic) under a
    hidden name unique to this process; it is removed whatever happens to `write`.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    _sync_folder(path.parent)
    return path


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


def write_text(path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def write_json(path, value) -> Path:
    """Write `value` as indented JSON to `path` atomically. NaN and infinity are refused (strict
    JSON parsers reject them), as a ValueError: a bug in the caller."""
    return write_text(path, json.dumps(value, indent=1, allow_nan=False) + "\n")
