"""The one error type that user-facing failures raise.

The CLI turns a :class:`DemsegError` into a single line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""


class DemsegError(Exception):
    """A problem with the user's input, flags or files (not a bug in demseg)."""
