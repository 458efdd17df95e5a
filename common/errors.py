"""Exceptions that the command line turns into one clear message and a non-zero exit."""

from __future__ import annotations

__all__ = ["BundleError", "DataError", "EyegcError", "SubmissionError"]


class EyegcError(Exception):
    """Base class: a user-facing error whose message names the file and the fix."""


class DataError(EyegcError):
    """Input data is missing, malformed, or does not follow the official layout."""


class BundleError(EyegcError):
    """A model bundle is incomplete, tampered with, or was made for another task."""


class SubmissionError(EyegcError):
    """Predictions cannot be turned into a valid official submission."""
