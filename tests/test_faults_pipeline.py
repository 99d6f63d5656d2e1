"""Whole-pipeline faults: kill -9 of each stage mid-run, two `dvc repro` at once, and
the shared download cache under a kill and under two downloads at once.

One baseline project (tiny config, one human decision in decisions.csv) is reproduced once
per module. Each kill test works on a copy of it (DVC cache included) where the stage is
new to DVC, as on its first run: it runs the stage, SIGKILLs the whole process group of
`dvc repro` once the stage is visibly half way (its progress output or its partial files,
seen from outside), as an OOM kill or a crashed machine would, then reruns `dvc repro`
and checks: the rerun completes and `dvc status` is clean; decisions.csv and the MLflow
runs logged before the kill are still there (and train resumes its completed epochs);
every output is bit-identical to the baseline's (dvc.lock hashes) and no stray file is
left, so nothing half-written survived. The outputs that hold wall-clock seconds are
left out of that comparison, as in test_pipeline_e2e.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, TINY, bin_path, make_project
from tests.mirror import Mirror

pytestmark = pytest.mark.slow

DVC = bin_path("dvc")
UP_TO_DATE = "Data and pipelines are up to date."
# Outputs that hold wall-clock seconds (or the MLflow run id); everything else is bit-identical.
CLOCK = {"reports/train_history.csv", "reports/train.json", "reports/relevance.json", "reports/report.html"}
DECISION = {"decision": "reject", "reason": "petals-cut-off", "time": "2024-05-01T10:00:00Z"}
# What a stage prints when its work is done: absent from the output of a kill that landed mid-run.
DONE = {
    "download": "files listed in",
    "ingest": "ingest: found",
    "relevance": "relevance: held-out AUC",
    "curate": "curate: kept",
    "train": "train: val_psnr",
    "evaluate": "evaluate: psnr",
}


# ---------------------------------------------------------------------------- processes

def dvc_env() -> dict:
    """The user's default set-up: the project's own MLflow store (mlflow.db at its root),
    and unbuffered stage output, so that progress is seen as it happens."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def dvc(args: list[str], proj: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([DVC, *args], cwd=proj, env=dvc_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


class Watched:
    """A dvc command in its own process group, its output collected as it comes."""

    def __init__(self, args: list[str], proj: Path):
        self.started = time.monotonic()
        self.seconds: float | None = None  # how long it ran, once it has ended
        self.proc = subprocess.Popen([DVC, *args], cwd=proj, env=dvc_env(), stdout=subprocess.PIPE,
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
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.wait(60)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        finally:
            self._reader.join(10)
        return rc


def mongods(proj: Path) -> list[int]:
    """Pids of the mongod processes serving a data directory inside `proj`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if args and Path(args[0]).name == "mongod" and any(a.startswith(str(proj)) for a in args):
            pids.append(int(entry.name))
    return pids


def stop_mongods(proj: Path) -> None:
    """End what a test left running (the test started it), by pid."""
    for pid in mongods(proj):
        os.kill(pid, signal.SIGKILL)


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


# ---------------------------------------------------------------------------- project state

def outs_hashes(proj: Path) -> dict:
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    return {o["path"]: o.get("md5") for stage in lock["stages"].values() for o in stage.get("outs", [])}


def stage_outs(proj: Path, stage: str) -> list[str]:
    """The stage's outputs, as dvc.yaml names them."""
    outs = yaml.safe_load((proj / "dvc.yaml").read_text())["stages"][stage]["outs"]
    return [next(iter(o)) if isinstance(o, dict) else o for o in outs]


def git_status(proj: Path) -> set[str]:
    """Untracked and changed files: stray files (a half-written temp) show here."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=proj,
                         capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def mlflow_runs(proj: Path) -> dict[str, tuple[str, str]]:
    """run id -> (status, lifecycle stage), from the project's own store."""
    with closing(sqlite3.connect(proj / "mlflow.db")) as con:
        return {r[0]: (r[1], r[2]) for r in con.execute("SELECT run_uuid, status, lifecycle_stage FROM runs")}


def metric_steps(proj: Path, run_id: str, key: str) -> list[int]:
    with closing(sqlite3.connect(proj / "mlflow.db")) as con:
        return sorted(r[0] for r in con.execute(
            "SELECT DISTINCT step FROM metrics WHERE run_uuid = ? AND key = ?", (run_id, key)))


def copy_project(baseline: Path, dest: Path, first_run_of: str | None = None) -> Path:
    """A copy of the baseline, DVC cache included, without the FiftyOne database (a fresh
    clone has none; curate builds it).

    With `first_run_of`, that stage is made new to DVC, as on its first run or after an
    edit: its dvc.lock entry and the run cache are dropped. Otherwise a rerun after the
    kill would not run the stage at all: DVC would check its outputs out of the cache
    ("Stage is cached - skipping run"), and the test would show nothing about the stage.
    """
    shutil.copytree(baseline, dest, symlinks=True,
                    ignore=lambda d, names: [".fiftyone"] if Path(d) == baseline else [])
    if first_run_of:
        shutil.rmtree(dest / ".dvc" / "cache" / "runs", ignore_errors=True)
        lock = yaml.safe_load((dest / "dvc.lock").read_text())
        del lock["stages"][first_run_of]
        (dest / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    return dest


# ---------------------------------------------------------------------------- the baseline

def decide(proj: Path) -> None:
    """A person's decision: reject one clean, usable image."""
    manifest = pd.read_parquet(proj / "data" / "ingest" / "manifest.parquet")
    clean = manifest[(manifest["status"] == "ok") & (manifest["defect"] == "none")]
    row = {"id": clean["id"].iloc[0], **DECISION}
    pd.DataFrame([row]).to_csv(proj / "data" / "curation" / "decisions.csv", index=False)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    proj = make_project(tmp_path_factory.mktemp("faults-pipeline") / "baseline", TINY)
    try:
        dvc(["repro", "ingest"], proj)
        decide(proj)
        dvc(["repro"], proj)
    finally:
        stop_mongods(proj)
    assert '"human_decisions": 1' in (proj / "reports" / "curate.json").read_text()
    return proj


# ---------------------------------------------------------------------------- kill -9 mid-run

def _garden_half_written(proj: Path, output: str) -> bool:
    garden = proj / "data" / "raw" / "garden"
    return garden.is_dir() and len(list(garden.glob("img_*"))) >= 10 and not (proj / "data/raw/listing.csv").exists()


def _progress(pattern: str):
    def seen(proj: Path, output: str) -> bool:
        return any(int(p) >= 20 for p in re.findall(pattern, output))
    return seen


# When a stage is visibly half way, seen from outside (after DVC removed its old outputs).
MID_RUN = {
    "download": _garden_half_written,  # some image files written, no listing yet
    "ingest": lambda proj, output: re.search(r"ingest:\s+\d+%", output) is not None,  # decoding in the pool
    "relevance": _progress(r"relevance: train:\s+(\d+)%"),  # a fifth of the training steps done
    # curated manifest and report written, its mongod serving: mirroring into FiftyOne
    "curate": lambda proj, output: (proj / "reports/curate.json").exists()
    and (proj / ".fiftyone/db/mongod.port").exists(),
    "train": lambda proj, output: (proj / "models/checkpoints/last.pt").exists(),  # an epoch checkpointed
    "evaluate": lambda proj, output: (proj / "reports/eval_per_class.csv").exists(),  # its first output written
}


def kill_mid_run(proj: Path, stage: str, timeout: float = 300) -> str | None:
    """`dvc repro -s <stage>`, SIGKILLed (whole group) once the stage is half way; its
    output, or None when the stage finished its work before the kill landed."""
    repro = Watched(["repro", "-s", stage], proj)
    deadline = time.monotonic() + timeout
    while not (f"Running stage '{stage}'" in repro.output and MID_RUN[stage](proj, repro.output)):
        if repro.proc.poll() is not None or time.monotonic() > deadline:
            repro.kill_group() if repro.proc.poll() is None else repro.wait(10)
            pytest.fail(f"{stage} never reached its mid-run point (rc {repro.proc.returncode}):\n{repro.output[-3000:]}")
        time.sleep(0.01)
    repro.kill_group()
    return None if DONE[stage] in repro.output else repro.output


def killed_copy(baseline: Path, where: Path, stage: str, attempts: int = 3) -> Path:
    """A copy of the baseline whose `stage` was killed mid-run. A loaded machine can let a
    short stage (ingest decodes 120 images in a blink) finish before the kill lands: then
    that copy proves nothing, and a fresh one is tried."""
    for attempt in range(attempts):
        proj = copy_project(baseline, where / f"proj{attempt}", first_run_of=stage)
        if kill_mid_run(proj, stage) is not None:
            return proj
        shutil.rmtree(proj)
    pytest.fail(f"{stage} finished its work before the kill, {attempts} times")


def survivors(proj: Path, stage: str, status_before: set[str], runs_before: dict) -> str:
    """What a kill left behind, in words (for the docs' table)."""
    present = [p for p in stage_outs(proj, stage) if (proj / p).exists()]
    stray = sorted(s[3:] for s in git_status(proj) - status_before if not any(s[3:].startswith(p) for p in present))
    runs = mlflow_runs(proj)
    running = [r for r, (status, _) in runs.items() if status == "RUNNING"]
    return (f"outputs present: {present or 'none'}; stray files: {stray or 'none'}; "
            f"new MLflow runs: {len(set(runs) - set(runs_before))}, RUNNING: {len(running)}")


def assert_same_as_baseline(proj: Path, baseline: Path) -> None:
    """Nothing half-written survived, and nothing a person did is lost."""
    ours, theirs = outs_hashes(proj), outs_hashes(baseline)
    assert {k: v for k, v in ours.items() if k not in CLOCK} == {k: v for k, v in theirs.items() if k not in CLOCK}
    assert git_status(proj) == git_status(baseline)  # no stray temporary files either
    decisions = "data/curation/decisions.csv"
    assert (proj / decisions).read_bytes() == (baseline / decisions).read_bytes()


@pytest.mark.parametrize("stage", ["download", "ingest", "relevance", "curate", "train", "evaluate"])
def test_kill_9_mid_stage_then_rerun(baseline, tmp_path, stage):
    runs_before = mlflow_runs(baseline)
    proj = None
    try:
        proj = killed_copy(baseline, tmp_path, stage)
        left = survivors(proj, stage, git_status(baseline), runs_before)
        # mongod dies with its starter (a parent-death signal), after its clean shutdown.
        assert wait_for(lambda: not mongods(proj), 30), f"mongod outlived the killed {stage}: {mongods(proj)}"

        rerun = dvc(["repro"], proj)
        assert f"Running stage '{stage}'" in rerun.stdout, rerun.stdout[-3000:]
        if stage == "train":  # the completed epoch is not trained again
            assert re.search(r"train: resuming from models/checkpoints/last.pt after epoch \d", rerun.stdout), rerun.stdout[-3000:]
        assert UP_TO_DATE in dvc(["status"], proj).stdout
        assert_same_as_baseline(proj, baseline)

        runs_after = mlflow_runs(proj)
        assert all(runs_after.get(r, ("", ""))[1] == "active" for r in runs_before), "an MLflow run was lost"
        if stage == "train":  # the killed training's run goes on: epoch 1's metrics, then epoch 2's
            (resumed,) = set(runs_after) - set(runs_before)
            assert runs_after[resumed][0] == "FINISHED"
            assert metric_steps(proj, resumed, "val_psnr") == [1, 2]
        still_running = sum(status == "RUNNING" for status, _ in runs_after.values())
        print(f"\nkill -9 {stage}: after the kill: {left}. The rerun ran: "
              f"{', '.join(re.findall(r'Running stage .([a-z]+).', rerun.stdout))}; MLflow runs RUNNING: {still_running}")
    finally:
        if proj is not None:
            stop_mongods(proj)


# ---------------------------------------------------------------------------- two dvc repro at once

@pytest.mark.parametrize("when", ["together", "during_a_stage"])
def test_two_dvc_repro_at_once(baseline, tmp_path, when):
    """Two `dvc repro` on one project (two terminals; a person and a script). DVC 3.67 holds
    its repo lock (.dvc/tmp/lock) only between stage commands, and a lock on the running
    stage's files (.dvc/tmp/rwlock) while its command runs. So the second one fails within
    seconds, in one ERROR line that names what is busy, then the pid and command of the
    first; the first completes as if alone."""
    proj = copy_project(baseline, tmp_path / "proj")
    (proj / "reports/metrics.json").unlink()  # evaluate must run again (the same bytes come out)
    first = Watched(["repro"], proj)
    if when == "during_a_stage":
        assert wait_for(lambda: "Running stage 'evaluate'" in first.output, 120), first.output[-2000:]
    second = Watched(["repro"], proj)
    rcs = [first.wait(600), second.wait(600)]
    assert sorted(rcs)[0] == 0 and sorted(rcs)[1] != 0, (rcs, first.output[-2000:], second.output[-2000:])
    winner, loser = (first, second) if rcs[0] == 0 else (second, first)
    if when == "during_a_stage":
        assert winner is first
    assert "Running stage 'evaluate'" in winner.output and "Running stage" not in loser.output

    assert loser.seconds < 30, f"the second dvc repro waited {loser.seconds:.0f} s"
    errors = [line for line in loser.output.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, loser.output
    if "Unable to acquire lock" not in errors[0]:  # the repo lock; else the running stage's files
        assert "is busy, it is being blocked by:" in errors[0], errors[0]
        assert re.search(rf"\(PID {winner.proc.pid}\): \S*dvc repro", loser.output), loser.output

    assert UP_TO_DATE in dvc(["status"], proj).stdout
    assert_same_as_baseline(proj, baseline)
    print(f"\ntwo dvc repro ({when}): the loser exited {max(rcs)} after {loser.seconds:.1f} s: {errors[0]}")


# ---------------------------------------------------------------------------- the download cache

def _fetch_command(url: str) -> list[str]:
    return [sys.executable, "-c", f"from pipeline.fetch import fetch; print(fetch({url!r}))"]


@pytest.fixture
def slow_mirror(tmp_path):
    """A loopback mirror serving 256 KB in 4 s, and the env of a process using its own cache."""
    data = os.urandom(256 * 1024)
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "big.bin").write_bytes(data)
    env = {**os.environ, "COLORIZE_CACHE_DIR": str(tmp_path / "cache")}
    with Mirror(tmp_path / "mirror") as mirror:
        mirror.seconds["big.bin"] = 4.0
        yield mirror, data, env


def test_kill_9_mid_download_then_rerun(slow_mirror, tmp_path):
    """A download killed mid-file (the download stage of flowers102 or openimages): the
    rerun asks only for the rest (HTTP Range), and the cached file is whole; the kill
    released the file's lock, so nothing waits for the dead process."""
    mirror, data, env = slow_mirror
    url = mirror.url + "/big.bin"
    killed = subprocess.Popen(_fetch_command(url), cwd=ROOT, env=env, start_new_session=True)
    assert wait_for(lambda: any(p.stat().st_size > len(data) // 4 for p in (tmp_path / "cache").rglob("*.part")), 60)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(10)
    part = next((tmp_path / "cache").rglob("*.part"))
    have = part.stat().st_size
    assert 0 < have < len(data)

    mirror.seconds.clear()
    rerun = subprocess.run(_fetch_command(url), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "another process" not in rerun.stdout
    assert mirror.ranges_seen == [("big.bin", f"bytes={have}-")]
    assert Path(rerun.stdout.strip().splitlines()[-1]).read_bytes() == data
    assert not part.exists()


def test_two_downloads_into_one_cache_at_once(slow_mirror):
    """Two processes fetching one URL into the shared download cache (two projects, or
    parallel queued experiments, on one machine): the second waits for the first and uses
    its file. Unlocked, both wrote one `.part` file: a corrupt file stayed in the cache for
    good, and the second one died on its rename with a traceback."""
    mirror, data, env = slow_mirror
    fetch = _fetch_command(mirror.url + "/big.bin")
    first = subprocess.Popen(fetch, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_for(lambda: mirror.requests["big.bin"] == 1, 60)  # the second starts while the first downloads
    second = subprocess.run(fetch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    first_out = first.communicate(timeout=120)[0]
    assert first.returncode == 0, first_out
    assert second.returncode == 0, second.stdout + second.stderr
    assert "another process is downloading it" in second.stdout
    assert mirror.requests["big.bin"] == 1  # the second asked for nothing
    cached = Path(first_out.strip().splitlines()[-1])
    assert Path(second.stdout.strip().splitlines()[-1]) == cached
    assert cached.read_bytes() == data
    assert not list(cached.parent.glob("*.part"))
