"""The one base class of user-facing errors.

An error that is the input's or the environment's fault (a bad flag, a missing
or corrupt file, a bad list line, an unwritable folder, a stopped peer) derives
from :class:`PanError`: the command-line entry points report it as one
sentence naming the file, line or argument, and exit with status 1 (2 for
:class:`UsageError`). Anything else is a bug and keeps its traceback. Each
class also derives from the built-in exception it refines (``ValueError``,
``OSError``, ...), so library callers can catch either.
"""

from __future__ import annotations


class PanError(Exception):
    """An error to report to the user as one sentence (no traceback)."""


class UsageError(PanError, ValueError):
    """Command-line arguments that cannot work (together); the message names the flags. Exit status 2."""


class MissingFileError(PanError, FileNotFoundError):
    """A file the user named, or that the run needs, is not there; the message says which and what to do."""
