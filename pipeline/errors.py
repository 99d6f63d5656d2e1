"""One error type for everything a user can fix, and the wrapper that prints it.

Stages raise `UserError` for bad params, missing inputs and the like; `run_main`
turns it into a single line on stderr and exit status 2, instead of a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """A problem the user can fix; its message is one line that says what and where."""


def run_main(main: Callable[[], object]) -> None:
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
