"""Plumbing for tests/test_faults.py: run, watch and kill real processes (whole process
groups), wait for what they do, find the mongods on a data directory, mount a small
tmpfs for a full disk, and copy a reproduced project for one test."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import IN_CI, bin_path

DVC = bin_path("dvc")
UP_TO_DATE = "Data and pipelines are up to date."
DB = Path(".fiftyone/db")  # a project's FiftyOne database, relative to its root


def wait_until(condition, timeout: float, interval: float = 0.05) -> bool:
    """Whether `condition()` came true within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def the_error_line(proc: subprocess.CompletedProcess) -> str:
    """The failure, as one `error:` line and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


# ----------------------------------------------------------------------------- processes


def runner_env(extra: dict | None = None) -> dict:
    """A process as a person starts it in a project: this venv's commands on PATH, output
    unbuffered (progress is seen as it happens), the project's own code, FiftyOne
    database and MLflow store (mlflow.db at its root), whatever the test session set;
    then `extra`."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    for name in ("MLFLOW_TRACKING_URI", "FIFTYONE_DATABASE_URI", "FIFTYONE_PRIVATE_DATABASE_PORT", "PYTHONPATH"):
        env.pop(name, None)
    return {**env, **(extra or {})}


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """`sig` to the process's whole group (it was started in a session of its own), as
    Ctrl-C in a terminal or an OOM kill of everything reaches it."""
    os.killpg(proc.pid, sig)


def run_bounded(cmd: list, cwd: Path, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess | None:
    """Run `cmd` in its own session; None when it is still running after `timeout` s (it
    and every child are then killed, so a hang cannot outlive the test)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=runner_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.communicate()
        return None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def dvc(args: list[str], proj: Path, check: bool = True, timeout: float = 900,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """`dvc <args>` in `proj`, as a person runs it there."""
    proc = run_bounded([DVC, *args], proj, timeout, env)
    assert proc is not None, f"dvc {' '.join(args)} still running after {timeout} s"
    if check and proc.returncode:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def assert_clean(proj: Path, *stages: str) -> None:
    """`dvc status` (of these stages, else of all) finds nothing to do."""
    out = dvc(["status", *stages], proj).stdout
    assert out.strip() == UP_TO_DATE, out


class Watched:
    """A dvc command in its own process group, its output collected as it comes."""

    def __init__(self, args: list[str], proj: Path):
        self.started = time.monotonic()
        self.seconds: float | None = None  # how long it ran, once it has ended
        self.proc = subprocess.Popen([DVC, *args], cwd=proj, env=runner_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self.proc.stdout.read1(1 << 16), b""):
            self._chunks.append(chunk)
        self.seconds = time.monotonic() - self.started  # its output closed: it has ended

    @property
    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def kill_group(self) -> None:
        """SIGKILL to dvc, the stage and every child in the group: no handler, no `finally` runs."""
        kill_group(self.proc)
        self.wait(60)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            raise
        finally:
            self._reader.join(10)
        return rc


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(procs: list[psutil.Process]) -> list[str]:
    """The command lines of those still running."""
    running = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                running.append(" ".join(p.cmdline()))
    return running


def mongods_on(dbpath: Path) -> list[psutil.Process]:
    """Live mongods serving this data directory, whoever started them."""
    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if p.info["name"] == "mongod" and p.info["status"] != psutil.STATUS_ZOMBIE and "--dbpath" in cmd:
            if Path(cmd[cmd.index("--dbpath") + 1]).resolve() == dbpath.resolve():
                found.append(p)
    return found


def stop_mongods(dbpath: Path) -> None:
    """End what a test left running on this data directory (the test started it)."""
    for p in mongods_on(dbpath):
        with contextlib.suppress(psutil.Error):
            p.kill()


# ----------------------------------------------------------------------------- a full disk


def cannot(message: str) -> None:
    """A fault the test cannot set up: a skip here, a failure under CI=true."""
    if IN_CI:
        pytest.fail(message + " (CI=true: fault tests must not skip)")
    pytest.skip(message)


@contextlib.contextmanager
def tmpfs(where: Path, size: int | str):
    """A real tmpfs of `size` (bytes, or "4m") at `where` (root only), unmounted on exit."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode:
        cannot(f"cannot mount a tmpfs at {where} ({mounted.stderr.strip()}): needs root or CAP_SYS_ADMIN")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(where)], check=True, capture_output=True)


def resize_tmpfs(where: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True, capture_output=True)


def used_bytes(where: Path) -> int:
    s = os.statvfs(where)
    return (s.f_blocks - s.f_bfree) * s.f_frsize


def fill(folder: Path, leave: int = 0) -> Path:
    """Write a filler file until at most `leave` bytes are free on `folder`'s filesystem."""
    filler = folder / "filler"
    st = os.statvfs(folder)
    todo = max(0, st.f_bavail * st.f_frsize - leave)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while todo > 0:
            todo -= os.write(fd, b"\0" * min(todo, 1 << 16))
    except OSError as e:
        assert e.errno == errno.ENOSPC and leave == 0, e
    finally:
        os.close(fd)
    return filler


# ----------------------------------------------------------------------------- projects


def copy_project(src: Path, dest: Path, *, database: bool = False, first_run_of: str | None = None) -> Path:
    """A copy of a reproduced project, DVC cache included. Without `database`, it has no
    FiftyOne database (a fresh clone has none; curate builds it); with it, mongod's
    preallocated journal files are left behind (it makes new ones).

    With `first_run_of`, that stage is made new to DVC, as on its first run or after an
    edit: its dvc.lock entry and the run cache are dropped. Otherwise a rerun after a
    kill would not run the stage at all: DVC would check its outputs out of the cache
    ("Stage is cached - skipping run"), and the test would show nothing about the stage.
    """
    def leave_out(folder: str, names: list[str]) -> list[str]:
        if Path(folder) == src and not database:
            return [".fiftyone"]
        return [name for name in names if name.startswith("WiredTigerPreplog.")]

    shutil.copytree(src, dest, symlinks=True, ignore=leave_out)
    if first_run_of:
        shutil.rmtree(dest / ".dvc" / "cache" / "runs", ignore_errors=True)
        lock = yaml.safe_load((dest / "dvc.lock").read_text())
        del lock["stages"][first_run_of]
        (dest / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    return dest
