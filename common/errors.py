"""Exceptions that the command line turns into one clear message and a non-zero exit."""

from __future__ import annotations

import errno

__all__ = ["BundleError", "DataError", "EyegcError", "SubmissionError", "user_error_message"]


class EyegcError(Exception):
    """Base class: a user-facing error whose message names the file and the fix."""


class DataError(EyegcError):
    """Input data is missing, malformed, or does not follow the official layout."""


class BundleError(EyegcError):
    """A model bundle is incomplete, tampered with, or was made for another task."""


class SubmissionError(EyegcError):
    """Predictions cannot be turned into a valid official submission."""


#: What to do about the operating-system errors a user's files and disks cause.
_OS_ERROR_FIXES = {
    errno.EACCES: "check its permissions, or choose a location you can write to",
    errno.EPERM: "check its permissions, or choose a location you can write to",
    errno.EROFS: "choose a writable location",
    errno.ENOSPC: "free some space or choose another location",
    errno.EDQUOT: "free some space or choose another location",
    errno.ENOENT: "check the path",
    errno.EISDIR: "give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
}


def user_error_message(exc: BaseException) -> str | None:
    """One line for an error the user can cause (an :class:`EyegcError`, or an ``OSError`` of
    their files: permissions, read-only or full disks, missing paths); ``None`` for anything else.
    """
    if isinstance(exc, EyegcError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None) or "a file"
        fix = _OS_ERROR_FIXES.get(exc.errno, "check the path and the disk")
        return f"{where}: {exc.strerror or exc}; {fix}"
    return None
