"""The one error type the workbench raises for bad input (files, flags, checkpoints).

Its message is a single line meant for a person: it names the file (and where useful the
subject, action and camera) and says what is wrong. The command line prints it as
``error: <message>`` and exits non-zero, without a traceback.
"""


class IIVFormerError(Exception):
    """A problem with the user's input that the user can fix; ``str(error)`` is one line."""


class DataError(IIVFormerError):
    """An archive that cannot be loaded or does not have the expected contents."""


class CheckpointError(IIVFormerError):
    """A checkpoint that cannot be loaded or does not fit the model."""


def one_line(text) -> str:
    """Fold any whitespace (newlines from a library's message included) into single spaces."""
    return " ".join(str(text).split())
