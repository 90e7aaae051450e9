"""Errors shared across packages, and how a command reports a refused input."""
import os
import re
import sys

DEBUG_VARIABLE = "SNAPPOSE_DEBUG"


class BadInput(ValueError):
    """An input a command refuses (a file, a path, an option value); the message names it and says what to do.

    The errors of each package (``ConfigError``, ``InputError``, ``CheckpointError``,
    ``ConversionError``, ``ShardDataError``) are kinds of it, so a command's ``main``
    turns all of them into exit code 2 with one ``except``.
    """


class ConfigError(BadInput):
    """A configuration file or value that does not fit the schema."""


def one_line(error):
    """``str(error)`` on one line (parsers' messages span several)."""
    return re.sub(r"\s*\n\s*", " ", str(error).strip())  # only line breaks: a path keeps its spaces


def refuse(error, log=None):
    """Report a refused input as one line on stderr (or ``log``) and return exit status 2.

    With the environment variable SNAPPOSE_DEBUG set (to anything but "" or "0"),
    re-raise instead, so a developer sees the traceback.
    """
    if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
        raise error
    message = f"error: {one_line(error)}"
    if log is None:
        print(message, file=sys.stderr)
    else:
        log.error("%s", one_line(error))
    return 2

