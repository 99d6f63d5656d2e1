"""One error type for everything a user can fix, and the wrapper that prints it.

Stages raise `UserError` for bad params, missing inputs and the like; `run_main`
turns it into a single line on stderr and exit status 2, instead of a traceback.

Two faults from outside are also one line wherever they strike, because no code of
ours could have prevented them and the user's fix is the same everywhere:
- a full disk (ENOSPC, or SQLite's "database or disk is full"), also when it arrives
  wrapped by MLflow, SQLAlchemy or torch: the whole chain of causes is searched;
- a connection lost in the middle of a run (a server stopped: refused, reset).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
from typing import Callable, Iterator

MAX_MESSAGE = 400  # characters of an error line: enough to name a key, a file and a fix
SQLITE_FULL = 13  # sqlite3 result code of "database or disk is full"
# numpy's short write ("319488 requested and 155520 written") carries no errno.
SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


class UserError(Exception):
    """A problem the user can fix; its message is one line that says what and where."""


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` as one line of at most `limit` characters (ANSI colours and newlines gone)."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it was raised from or during, and so on down the chain
    (SQLAlchemy keeps the driver's error as `.orig` as well)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "orig", None), e.__context__, e.__cause__]


def disk_full(exc: BaseException) -> str | None:
    """What could not be written, if a full disk is somewhere in the chain; else None."""
    for e in causes(exc):
        if isinstance(e, OSError) and (e.errno in (errno.ENOSPC, errno.EDQUOT) or SHORT_WRITE.search(str(e))):
            return f"writing {e.filename}" if e.filename else "writing a file"
        if getattr(e, "sqlite_errorcode", None) == SQLITE_FULL:
            return "growing an SQLite database"
    return None


def disk_full_line(what: str, folder: str | os.PathLike | None = None) -> str:
    """The one line for a full disk: what failed, the space left where it failed, the fix."""
    free = ""
    if folder is not None:
        with contextlib.suppress(OSError):
            free = f" ({_size(shutil.disk_usage(folder).free)} free)"
    return f"disk full {what}{free}: free some space and rerun (completed work is kept)"


def _size(n: int) -> str:
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def connection_lost(exc: BaseException) -> str | None:
    """Why and the outermost message (which names the URL), if a refused or reset
    connection is in the chain; else None."""
    for e in causes(exc):
        if isinstance(e, ConnectionError):
            return f"({e.strerror or type(e).__name__}): {one_line(str(exc) or type(exc).__name__, 200)}"
    return None


def fault_line(exc: BaseException) -> str | None:
    """The one line for a fault from outside (disk full, connection lost), or None."""
    if full := disk_full(exc):
        return disk_full_line(full)
    if lost := connection_lost(exc):
        return f"connection lost {lost}: is the server still running?"
    return None


def run_main(main: Callable[[], object]) -> None:
    try:
        main()
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        line = fault_line(e)
        if line is None:
            raise  # a bug: the traceback is what is needed
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
