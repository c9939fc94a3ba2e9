"""Every error type the workbench raises for bad input, and the exit status each one ends with.

A message is a single line meant for a person: it names the file (and where useful the subject,
action and camera) and says what is wrong. The command line prints it as ``error: <message>``
and exits with the error's ``exit_status``, without a traceback.
"""


class IIVFormerError(Exception):
    """A problem with the user's input that the user can fix; ``str(error)`` is one line."""

    exit_status = 1


class DataError(IIVFormerError):
    """An archive that cannot be loaded or does not have the expected contents."""


class CheckpointError(IIVFormerError):
    """A checkpoint that cannot be loaded or does not fit the model."""


class TrainingInterrupted(IIVFormerError):
    """Ctrl-C during training; the message says which epoch is saved and how to continue."""

    exit_status = 130  # 128 + SIGINT, as a shell reports an interrupted command


def one_line(text) -> str:
    """Fold any whitespace (newlines from a library's message included) into single spaces."""
    return " ".join(str(text).split())


def printable(text) -> str:
    """`text` with control characters (newlines, terminal escape sequences) shown as escapes such as
    ``\\x1b``, so that names read from a file cannot move the cursor or recolour a terminal."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


def short(value, limit: int = 60) -> str:
    """`value` shown in a message: the repr of a scalar or string (cut at `limit` characters),
    else its type and length or shape, so a huge or deeply nested value never makes a huge message."""
    if value is None or isinstance(value, (bool, int, float, str)):
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "..."
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # a tensor or an array
        return f"a {value.dtype} {type(value).__name__} of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
