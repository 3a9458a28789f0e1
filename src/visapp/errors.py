"""The one exception type for a user's mistake or an environment problem: its message says what, where and how."""

from __future__ import annotations


class VisError(Exception):
    """Something the user can fix: the message says what, where, and how. Shown without a traceback."""


class DataError(ValueError):
    """One problem in an input file, named by its validation code (`image_truncated`, `xml_malformed`, ...).

    Raised by the format readers; validation turns it into a report issue, never into a crash.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
