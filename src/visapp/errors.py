"""The one exception type for a user's mistake or an environment problem, and how entry points report it."""

from __future__ import annotations

import sys
from collections.abc import Callable


class VisError(Exception):
    """Something the user can fix: the message says what, where, and how. Printed without a traceback."""


def exit_on_error(main: Callable[[], int | None]) -> int:
    """Run an entry point; a `VisError` becomes one line on stderr and exit status 2, not a traceback."""
    try:
        return main() or 0
    except VisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
