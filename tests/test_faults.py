"""Faults lose nobody's work (issue 13). Each fault is made for real, from outside: real
`dvc repro` in a temp git+DVC project, the project's own mongod, the real FiftyOne App,
a real `mlflow server`, real signals, a real full tmpfs. Nothing under test is mocked.

After every fault, three checks:
1. the rerun completes;
2. `dvc status` is clean (where a DVC project is involved);
3. nothing a person did is lost: decisions.csv and the App's tags, completed epochs,
   MLflow runs.
And a fault a user can fix is reported in one `error:` line, without a traceback.

The fault classes, one section each:
- kill -9 of each stage mid-run: download, ingest, relevance, curate, train, evaluate;
- two `dvc repro` at once;
- the shared download cache: a download killed mid-file, two downloads of one file at once;
- the FiftyOne App stopped by a signal (SIGINT inherited as ignored, SIGTERM, SIGHUP) or killed;
- mongod: stopped while it starts, orphaned, named by a stale port file, killed under
  curate, shared by two processes;
- a lost FiftyOne database;
- MLflow: the server down at the start and dying mid-training, credentials refused, the
  run gone while a checkpoint waits, a corrupt mlflow.db, an unreachable server under dvc;
- disk full: in ingest, while writing a checkpoint, in curate's MLflow logging;
- tampered checkpoints: a huge model, "billion laughs" params;
- params: an unknown top-level key;
- bad input files: FIFOs, sockets, devices, broken links, folder links, animations;
- a fuzz pass of the image decoder.

Most sections work on a copy of one tiny project reproduced once per module
(`baseline`); the training-resume tests use test_train_engine's `prepared` project
(4 epochs, no DVC). Tests that run dvc or a training are marked slow; the others take
seconds. The plumbing (processes, tmpfs, project copies) is in tests/faultkit.py.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pymongo
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from colorize.common import images as imageio
from colorize.common import paths
from colorize.common.images import STATUSES, decode, fit_square
from colorize.curation import fodb, review
from colorize.curation.decisions import read_decisions, write_decisions
from tests.conftest import ROOT, SHARED_DATA, TINY, bin_path, make_project, run
from tests.faultkit import (
    DB, DVC, Watched, alive, assert_clean, cannot, copy_project, descendants, dvc, fill, kill_group, mongods_on,
    resize_tmpfs, run_bounded, runner_env, stop_mongods, the_error_line, tmpfs, used_bytes, wait_until,
)
from tests.mirror import Mirror
from tests.test_colorize import _params, save_like_train
from tests.test_mlflow_ui import LOOPBACK, _family, _health, _stop
from tests.test_review_app import _answers, _free_port, running_app
from tests.test_train_engine import copy_of, kill_at_first_checkpoint, prepared  # noqa: F401 - a fixture

CURATED = Path("data/curated/manifest.parquet")


# ============================================================================= the project


def decide(proj: Path) -> None:
    """A person's decisions on two clean, usable images: reject one, keep the other."""
    manifest = pd.read_parquet(proj / "data" / "ingest" / "manifest.parquet")
    clean = sorted(manifest.query("status == 'ok' and defect == 'none'")["id"])
    write_decisions(pd.DataFrame([
        {"id": clean[0], "decision": "reject", "reason": "irrelevant", "time": "2026-01-01T00:00:00Z"},
        {"id": clean[1], "decision": "keep", "reason": "", "time": "2026-01-01T00:00:00Z"},
    ]), proj / paths.DECISIONS)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """The tiny project, reproduced once by `dvc repro`, with two decisions in git. Tests
    work on copies (faultkit.copy_project) and compare them with it."""
    proj = make_project(tmp_path_factory.mktemp("faults") / "baseline", TINY)
    try:
        dvc(["repro", "ingest"], proj)
        decide(proj)
        run(["git", "commit", "-qm", "two decisions", str(paths.DECISIONS)], proj)
        dvc(["repro"], proj)
    finally:
        stop_mongods(proj / DB)
    assert '"human_decisions": 2' in (proj / "reports" / "curate.json").read_text()
    assert_clean(proj)
    return proj


# ============================================================================= kill -9 of each stage
# Each kill test works on a copy of the baseline (DVC cache included) where the stage is
# new to DVC, as on its first run: it runs the stage, SIGKILLs the whole process group
# of `dvc repro` once the stage is visibly half way (its progress output or its partial
# files, seen from outside), as an OOM kill or a crashed machine would, then reruns
# `dvc repro` and checks: the rerun completes and `dvc status` is clean; decisions.csv
# and the MLflow runs logged before the kill are still there (and train resumes its
# completed epochs); every output is bit-identical to the baseline's (dvc.lock hashes)
# and no stray file is left, so nothing half-written survived. The outputs that hold
# wall-clock seconds are left out of that comparison, as in test_pipeline_e2e.

# Outputs that hold wall-clock seconds (or the MLflow run id); everything else is bit-identical.
CLOCK = {"reports/train_history.csv", "reports/train.json", "reports/relevance.json", "reports/report.html"}
# What a stage prints when its work is done: absent from the output of a kill that landed mid-run.
DONE = {
    "download": "files listed in",
    "ingest": "ingest: found",
    "relevance": "relevance: held-out AUC",
    "curate": "curate: kept",
    "train": "train: val_psnr",
    "evaluate": "evaluate: psnr",
}


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
    and (proj / DB / fodb.PORT_FILE).exists(),
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
    assert (proj / paths.DECISIONS).read_bytes() == (baseline / paths.DECISIONS).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["download", "ingest", "relevance", "curate", "train", "evaluate"])
def test_kill_9_mid_stage_then_rerun(baseline, tmp_path, stage):
    runs_before = mlflow_runs(baseline)
    proj = None
    try:
        proj = killed_copy(baseline, tmp_path, stage)
        left = survivors(proj, stage, git_status(baseline), runs_before)
        # mongod dies with its starter (a parent-death signal), after its clean shutdown.
        assert wait_until(lambda: not mongods_on(proj / DB), 30), (
            f"mongod outlived the killed {stage}: {mongods_on(proj / DB)}")

        rerun = dvc(["repro"], proj)
        assert f"Running stage '{stage}'" in rerun.stdout, rerun.stdout[-3000:]
        if stage == "train":  # the completed epoch is not trained again
            assert re.search(r"train: resuming from models/checkpoints/last.pt after epoch \d", rerun.stdout), rerun.stdout[-3000:]
        assert_clean(proj)
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
            stop_mongods(proj / DB)


# ============================================================================= two dvc repro at once


@pytest.mark.slow
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
        assert wait_until(lambda: "Running stage 'evaluate'" in first.output, 120), first.output[-2000:]
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

    assert_clean(proj)
    assert_same_as_baseline(proj, baseline)
    print(f"\ntwo dvc repro ({when}): the loser exited {max(rcs)} after {loser.seconds:.1f} s: {errors[0]}")


# ============================================================================= the download cache


def _fetch_command(url: str) -> list[str]:
    return [sys.executable, "-c", f"from colorize.common.fetch import fetch; print(fetch({url!r}))"]


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
    assert wait_until(lambda: any(p.stat().st_size > len(data) // 4 for p in (tmp_path / "cache").rglob("*.part")), 60)
    kill_group(killed)
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
    assert wait_until(lambda: mirror.requests["big.bin"] == 1, 60)  # the second starts while the first downloads
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


# ============================================================================= the App under signals
# The baseline's FiftyOne database, the real App from `colorize-review app`, and
# tags set through the App server's `/tag` route (the one its UI calls). After each
# fault no decision is lost (decisions.csv and the App's tags), and no mongod or App
# server is left behind.

STOP_S = 20  # the App must be gone this soon after a signal (export, server, mongod included)


@pytest.fixture
def project(baseline, tmp_path) -> Path:
    """A copy of the baseline with its FiftyOne database, for one test (tests change it)."""
    proj = copy_project(baseline, tmp_path / "proj", database=True)
    try:
        yield proj
    finally:
        stop_mongods(proj / DB)  # whatever a failing test left behind


def sync(proj: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "colorize.cli.review", "sync"], proj, check=check, timeout=300)


def decisions(proj: Path) -> list[list[str]]:
    return read_decisions(proj / paths.DECISIONS)[["id", "decision", "reason"]].values.tolist()


def undecided(proj: Path, n: int) -> list[str]:
    """Ids of n readable samples nobody decided on yet."""
    done = {d[0] for d in decisions(proj)}
    return [i for i in sorted(pd.read_parquet(proj / CURATED).query("status == 'ok'")["id"]) if i not in done][:n]


def repro_applies(proj: Path, expected: list[list[str]]) -> None:
    """The rerun: `dvc repro` takes decisions.csv as it is now, and the curated manifest
    carries every decision."""
    assert sorted(decisions(proj)) == sorted(expected)
    dvc(["repro", "curate"], proj)
    assert_clean(proj, "curate")
    human = pd.read_parquet(proj / CURATED).set_index("id")["human"]
    assert {i: human[i] for i, _, _ in expected} == {i: d for i, d, _ in expected}


def sample_ids(proj: Path, cids: list[str]) -> dict[str, str]:
    """FiftyOne's sample ids for these curated ids, read from the running mongod."""
    port = (proj / DB / fodb.PORT_FILE).read_text().strip()
    db = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=5000)["fiftyone"]
    collection = db.datasets.find_one({"name": review.DATASET})["sample_collection_name"]
    return {d["cid"]: str(d["_id"]) for d in db[collection].find({"cid": {"$in": cids}}, {"cid": 1})}


def tag_in_app(url: str, proj: Path, cid: str, tags: list[str]) -> None:
    """What the App's tagger does: POST /tag with the selected sample and the tags to add."""
    body = {"dataset": review.DATASET, "sample_ids": [sample_ids(proj, [cid])[cid]],
            "changes": {t: True for t in tags}}
    request = urllib.request.Request(f"{url}/tag", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200, response.read()[:500]


def ignore_sigint() -> None:
    """What a command started with `&` from a script inherits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


STOPS = {
    "SIGINT, inherited as ignored": (signal.SIGINT, ignore_sigint),
    "SIGTERM": (signal.SIGTERM, None),
    "SIGHUP (terminal closed)": (signal.SIGHUP, None),
}


@pytest.mark.slow
@pytest.mark.parametrize("how", STOPS)
def test_app_saves_decisions_when_stopped_by_a_signal(project, tmp_path, how):
    """Tags set in the App are in decisions.csv however the App is stopped, it exits
    promptly, and neither its server nor its mongod outlives it."""
    sig, preexec = STOPS[how]
    before = decisions(project)
    reject, keep = undecided(project, 2)
    with running_app(project, runner_env(), tmp_path / "app.log", preexec_fn=preexec) as app:
        tag_in_app(app["url"], project, reject, ["reject", "reason:blurry"])
        tag_in_app(app["url"], project, keep, ["keep"])
        family = descendants(app["proc"].pid)  # the App's server (and its watcher), its mongod
        assert any(p.name() == "mongod" for p in family) and len(family) >= 3, family
        started = time.monotonic()
        app["proc"].send_signal(sig)
        try:
            rc = app["proc"].wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the App ignored {how} for {STOP_S} s:\n{app['log'].read_text()[-3000:]}")
        stop_s = time.monotonic() - started
        left = alive(family)
    log = app["log"].read_text()
    print(f"\nApp up in {app['start_s']} s, stopped by {how} in {stop_s:.1f} s")
    assert rc == 0, log[-3000:]
    assert "decision(s) saved" in log, log[-3000:]
    assert left == [], f"outlived the App: {left}"
    assert not (project / DB / fodb.PORT_FILE).exists()
    assert not _answers(app["url"])
    repro_applies(project, before + [[reject, "reject", "blurry"], [keep, "keep", ""]])


@pytest.mark.slow
def test_app_killed_then_sync_recovers_the_tags(project, tmp_path):
    """`make sync` while the App is open shares the App's mongod and leaves it running; the
    App then killed with SIGKILL takes its mongod with it, and the next `review sync` finds
    every tag in the database."""
    before = decisions(project)
    first, second = undecided(project, 2)
    with running_app(project, runner_env(), tmp_path / "app.log") as app:
        mongod = [p for p in descendants(app["proc"].pid) if p.name() == "mongod"]
        assert len(mongod) == 1, mongod
        tag_in_app(app["url"], project, first, ["reject:dark"])

        synced = sync(project)
        assert "fodb:" not in synced.stderr, synced.stderr  # nothing stopped, nothing started
        assert sorted(decisions(project)) == sorted(before + [[first, "reject", "dark"]])
        assert mongod[0].is_running() and mongods_on(project / DB) == mongod, "sync must not stop the App's mongod"

        tag_in_app(app["url"], project, second, ["keep"])  # the App still works; this tag is only in the database
        app["proc"].kill()
        app["proc"].wait(timeout=30)
        assert wait_until(lambda: not mongods_on(project / DB), 30), "the killed App's mongod outlived it"

    sync(project)
    assert not mongods_on(project / DB)
    repro_applies(project, before + [[first, "reject", "dark"], [second, "keep", ""]])


# ============================================================================= mongod's life


def start_curate(proj: Path) -> Watched:
    """`dvc repro -f -s curate` in a session of its own, as from a terminal: Ctrl-C there
    reaches its whole process group."""
    return Watched(["repro", "-f", "-s", "curate"], proj)


def child_mongod(curate: Watched, timeout: float = 300) -> psutil.Process:
    """The mongod that a run of curate starts, as soon as it appears."""
    found: list[psutil.Process] = []

    def appeared() -> bool:
        found[:] = [p for p in descendants(curate.proc.pid) if p.name() == "mongod"]
        return bool(found) or curate.proc.poll() is not None

    assert wait_until(appeared, timeout, 0.02) and found, f"no mongod started:\n{curate.output[-3000:]}"
    return found[0]


def rerun_works(proj: Path, decided: list) -> None:
    dvc(["repro", "-f", "-s", "curate"], proj)  # forced: starts a mongod again
    assert_clean(proj, "curate")
    synced = sync(proj)
    assert "rebuilding" not in synced.stderr  # curate's dataset is there
    assert decisions(proj) == decided


def served_dbpath(uri: str) -> Path | None:
    """The data directory of the mongod answering at `uri`, in its own words."""
    try:
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=1000) as client:
            return Path(client.admin.command("getCmdLineOpts")["parsed"]["storage"]["dbPath"]).resolve()
    except pymongo.errors.PyMongoError:
        return None


@pytest.mark.slow
@pytest.mark.parametrize("how", ["Ctrl-C", "SIGKILL of curate"])
def test_curate_stopped_while_mongod_starts_leaves_no_mongod(project, how):
    """Ctrl-C (SIGINT to the terminal's process group) or kill -9 of curate while its mongod
    starts: no mongod survives on the project's data directory, and the next run works."""
    decided = decisions(project)
    curate = start_curate(project)
    mongod = child_mongod(curate)
    in_startup = not (project / DB / fodb.PORT_FILE).exists()
    if how == "Ctrl-C":
        kill_group(curate.proc, signal.SIGINT)
    else:
        curate_py = [p for p in descendants(curate.proc.pid) if p.cmdline()[-2:] == ["-m", "colorize.stages.curate"]]
        curate_py[0].kill()
    rc = curate.wait(120)
    out = curate.output
    assert rc != 0, out[-3000:]
    assert in_startup, "the signal came after mongod had started: the test missed its moment"
    assert wait_until(lambda: not mongods_on(project / DB), 30), (
        f"mongod {mongod.pid} outlived the curate that started it ({how})")
    rerun_works(project, decided)


def orphan_mongod(proj: Path, port_file: bool) -> psutil.Process:
    """A mongod on the project's database whose starter is gone, as a killed curate of the
    old code (or one on another OS) left it: under init, holding the lock; with the port file
    where the kill came after it was written."""
    port = _free_port()
    dbpath = proj / DB
    cmd = (f"setsid {fodb.mongod_binary()} --dbpath {dbpath} --bind_ip 127.0.0.1 --port {port} "
           f"--logpath {dbpath / 'mongod.log'} --logappend >/dev/null 2>&1 & echo $!")
    pid = int(subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True).stdout)
    orphan = psutil.Process(pid)
    assert wait_until(lambda: served_dbpath(f"mongodb://127.0.0.1:{port}") == dbpath.resolve(), 60, 0.2)
    if port_file:
        (dbpath / fodb.PORT_FILE).write_text(str(port))
    return orphan


@pytest.mark.slow
@pytest.mark.parametrize("port_file", [True, False], ids=["port file written", "killed before the port file"])
def test_an_orphaned_mongod_is_stopped_and_replaced(project, port_file):
    """The database lock held by a mongod whose starter is gone: the next command stops it
    (saying so, in one line) and goes on with its own, which it stops when done."""
    decided = decisions(project)
    orphan = orphan_mongod(project, port_file)
    synced = sync(project, check=False)
    assert synced.returncode == 0, synced.stderr[-3000:]
    notes = [line for line in synced.stderr.splitlines() if line.startswith("fodb:")]
    assert len(notes) == 1 and str(orphan.pid) in notes[0], synced.stderr[-3000:]
    assert alive([orphan]) == [], "the orphan was left running"
    assert not mongods_on(project / DB)
    assert decisions(project) == decided
    assert_clean(project, "curate")


@contextlib.contextmanager
def foreign_mongod(dbpath: Path):
    """A mongod that is not the project's: its own data directory, started and stopped here."""
    dbpath.mkdir(parents=True)
    port = _free_port()
    proc = subprocess.Popen([fodb.mongod_binary(), "--dbpath", str(dbpath), "--bind_ip", "127.0.0.1",
                             "--port", str(port), "--logpath", str(dbpath / "mongod.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"mongodb://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: served_dbpath(uri) == dbpath.resolve(), 60, 0.2), "foreign mongod did not start"
        yield proc, uri
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.slow
def test_a_port_file_naming_another_mongod_is_not_used(project, tmp_path):
    """A stale mongod.port whose port now belongs to a mongod on another data directory:
    the project starts its own; the other database is neither used nor stopped."""
    decided = decisions(project)
    with foreign_mongod(tmp_path / "foreign") as (foreign, uri):
        client = pymongo.MongoClient(uri)
        databases = client.list_database_names()
        (project / DB / fodb.PORT_FILE).write_text(uri.rsplit(":", 1)[1])
        synced = sync(project, check=False)
        assert synced.returncode == 0, synced.stderr[-3000:]
        assert client.list_database_names() == databases, "the project wrote into a foreign database"
        assert foreign.poll() is None, "the foreign mongod was stopped"
    assert decisions(project) == decided
    assert not mongods_on(project / DB)
    assert_clean(project, "curate")


@pytest.mark.slow
def test_mongod_killed_during_curate_is_one_line(project):
    """kill -9 of mongod while curate uses it: curate fails within seconds with one line
    naming it (not pymongo's 30 s wait and traceback), and the rerun works."""
    decided = decisions(project)
    curate = start_curate(project)
    mongod = child_mongod(curate)
    assert wait_until(lambda: (project / DB / fodb.PORT_FILE).exists() or curate.proc.poll() is not None, 120)
    mongod.kill()  # serving: curate is importing fiftyone to sync, or syncing
    killed = time.monotonic()
    rc = curate.wait(120)
    out = curate.output
    fail_s = time.monotonic() - killed
    print(f"\ncurate failed {fail_s:.1f} s after mongod was killed\n{out[-3000:]}")
    assert rc != 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mongod stopped while in use" in errors[0], out[-3000:]
    assert fail_s < 25, f"took {fail_s:.0f} s to notice"
    rerun_works(project, decided)


SHARER = """
import sys, time, pathlib
import pymongo
from colorize.curation import fodb
entered, leave = map(pathlib.Path, sys.argv[1:3])
with fodb.database() as uri:
    entered.touch()
    while not leave.exists():
        time.sleep(0.05)
    # the database must still be there, whoever started its mongod
    pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000).probe.things.insert_one({"by": entered.name})
print("done", flush=True)
"""


def test_two_processes_share_a_mongod_and_the_starter_waits_for_the_other(tmp_path):
    """Two users of one mongod (two queued experiments' curates, `make sync` beside the App):
    the one that started it leaves first, yet the other finishes its work; the mongod is
    stopped once both are done."""
    dbpath = tmp_path / "db"
    environment = runner_env({"FIFTYONE_DATABASE_DIR": str(dbpath), "PYTHONPATH": str(ROOT)})

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", SHARER, str(tmp_path / f"{name}.in"), str(tmp_path / f"{name}.leave")],
                                env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    starter = start("starter")
    assert wait_until(lambda: (tmp_path / "starter.in").exists() or starter.poll() is not None, 120)
    other = start("other")
    assert wait_until(lambda: (tmp_path / "other.in").exists() or other.poll() is not None, 120)
    (tmp_path / "starter.leave").touch()  # the starter is done first ...
    time.sleep(2)
    assert starter.poll() is None, "the starter stopped mongod while another process used it"
    assert len(mongods_on(dbpath)) == 1
    (tmp_path / "other.leave").touch()  # ... and the other one can still finish
    out, err = other.communicate(timeout=60)
    assert other.returncode == 0 and "done" in out, err[-3000:]
    out, err = starter.communicate(timeout=60)
    assert starter.returncode == 0 and "another process still uses the mongod" in err, err[-3000:]
    assert wait_until(lambda: not mongods_on(dbpath), 30), "mongod outlived both users"


# ============================================================================= a lost database


@pytest.mark.slow
def test_a_deleted_database_is_rebuilt_from_the_curated_manifest(project):
    """`rm -rf .fiftyone/db`: `review sync` rebuilds the dataset itself (dvc would skip
    curate), says so, and decisions.csv is unchanged, byte for byte."""
    csv = (project / paths.DECISIONS).read_bytes()
    shutil.rmtree(project / DB)
    synced = sync(project)
    assert "rebuilding it from data/curated/manifest.parquet" in synced.stderr, synced.stderr[-3000:]
    assert (project / paths.DECISIONS).read_bytes() == csv
    again = sync(project)
    assert "rebuilding" not in again.stderr  # the rebuilt dataset stayed
    assert (project / paths.DECISIONS).read_bytes() == csv
    assert_clean(project, "curate")


@pytest.mark.slow
def test_a_deleted_database_and_manifest_give_advice_that_works(project):
    """Without the curated manifest either: one line whose advice, followed, works."""
    decided = decisions(project)
    shutil.rmtree(project / DB)
    shutil.rmtree(project / CURATED.parent)
    synced = sync(project, check=False)
    assert synced.returncode == 2, synced.stderr[-3000:]
    lines = synced.stderr.strip().splitlines()
    assert len(lines) == 1 and "`dvc repro -f -s curate`" in lines[0], synced.stderr[-3000:]
    dvc(["repro", "-f", "-s", "curate"], project)
    assert_clean(project, "curate")
    assert "rebuilding" not in sync(project).stderr
    assert decisions(project) == decided


# ============================================================================= MLflow
# Training under MLflow faults runs on test_train_engine's `prepared` project (download ..
# split done, 4 epochs to train): a resumed run must end with the uninterrupted run's
# weights (`straight`), every epoch logged once.

EPOCHS = 4  # tiny_params' train.epochs
QUICK = 30  # s: an unusable store must be reported within this


def run_stage(proj: Path, stage: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m colorize.stages.<stage>` in `proj`, as DVC runs it; it logs to the project's own
    mlflow.db unless `env` names another store."""
    done = run_bounded([sys.executable, "-m", f"colorize.stages.{stage}"], proj, 900, {"PYTHONPATH": str(proj), **(env or {})})
    assert done is not None, f"{stage} still running after 900 s"
    return done


@contextlib.contextmanager
def training(proj: Path, env: dict):
    """A `python -m colorize.stages.train` running in `proj`; killed on exit if still there."""
    proc = subprocess.Popen([sys.executable, "-m", "colorize.stages.train"], cwd=proj,
                            env=runner_env({"PYTHONPATH": str(proj), **env}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def pause_at_first_checkpoint(proc: subprocess.Popen, ckpt: Path) -> int:
    """SIGSTOP the training as soon as its first checkpoint appears; that epoch."""
    wait_until(lambda: ckpt.exists() or proc.poll() is not None, 600, 0.02)
    proc.send_signal(signal.SIGSTOP)
    assert proc.poll() is None, "training ended before its first checkpoint"
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= epoch < EPOCHS, "too late: the fault must strike before the last epoch"
    return epoch


def resume_until_exit(proc: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """SIGCONT the paused training and wait for its end (it fails the test after `timeout` s)."""
    proc.send_signal(signal.SIGCONT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"training still running {timeout} s after the fault:\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def weights_of(proj: Path) -> dict:
    return torch.load(proj / paths.MODEL, weights_only=True)["model"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def epochs_logged(uri: str, run_id: str, metric: str = "train_loss") -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, metric))


def sqlite_uri(db: Path) -> str:
    return f"sqlite:///{db}"


@pytest.fixture(scope="module")
def straight(prepared, tmp_path_factory) -> dict:  # noqa: F811 - the imported fixture
    """The final weights of an uninterrupted training: what every resumed run must match."""
    proj = copy_of(prepared, tmp_path_factory.mktemp("straight"), "straight")
    done = run_stage(proj, "train")
    assert done.returncode == 0, done.stderr[-3000:]
    return weights_of(proj)


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1:port over a sqlite store in `store`."""

    def __init__(self, store: Path, port: int):
        self.store, self.url = store, f"http://{LOOPBACK}:{port}"
        store.mkdir(parents=True, exist_ok=True)
        uri = sqlite_uri(store / "mlflow.db")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_TRACKING_URI": uri,
               "PYTHONUNBUFFERED": "1"}
        cmd = [bin_path("mlflow"), "server", "--backend-store-uri", uri, "--artifacts-destination",
               str(store / "mlartifacts"), "--host", LOOPBACK, "--port", str(port), "--workers", "1"]
        with open(store / "server.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=store, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.family: list = []

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + 120
        while not _health(self.url):
            self.family = _family(self.proc.pid) or self.family
            assert self.proc.poll() is None, (self.store / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (self.store / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        self.family = _family(self.proc.pid)

    def stop(self) -> None:
        """Stopped, all its processes gone (again: a no-op)."""
        _stop(self.proc, self.family)


@contextlib.contextmanager
def mlflow_server(store: Path, port: int):
    """A healthy MlflowServer; stopped on exit if the test has not stopped it."""
    server = MlflowServer(store, port)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_mlflow_server_down_at_start_and_dying_mid_training(prepared, straight, tmp_path):  # noqa: F811
    """Bug 3. A real server stops under a running training: the training fails in
    seconds with one line, its checkpoint whole. Rerun while the server is down: one line
    within 30 s, before any work. Server back: the rerun resumes the same run to the
    same weights, every epoch logged once."""
    proj = copy_of(prepared, tmp_path, "proj")
    port, store = _free_port(), tmp_path / "server"
    env = {"MLFLOW_TRACKING_URI": f"http://{LOOPBACK}:{port}"}
    ckpt = proj / paths.RESUME
    with mlflow_server(store, port) as server, training(proj, env) as proc:
        epoch = pause_at_first_checkpoint(proc, ckpt)  # held while the server goes
        server.stop()
        stopped_at = time.monotonic()
        died = resume_until_exit(proc, timeout=120)
    url = server.url
    died_in = time.monotonic() - stopped_at
    line = the_error_line(died)
    assert line.startswith("error: connection lost (Connection refused): ") and url in line, line
    assert died_in < 60, f"took {died_in:.0f} s to notice the server was gone"
    assert torch.load(ckpt, weights_only=True)["epoch"] == epoch

    started = time.monotonic()
    down = run_stage(proj, "train", env)
    took = time.monotonic() - started
    assert the_error_line(down) == (f"error: MLflow server {url} is unreachable (connection refused): "
                                    "start it or unset MLFLOW_TRACKING_URI")
    assert took < QUICK, f"{took:.0f} s"
    assert torch.load(ckpt, weights_only=True)["epoch"] == epoch  # untouched

    with mlflow_server(store, port):  # back, on the same store
        again = run_stage(proj, "train", env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"resuming from {paths.RESUME} after epoch {epoch}" in again.stdout
        run_id = json.loads((proj / paths.TRAIN_REPORT).read_text())["mlflow_run_id"]
        assert epochs_logged(url, run_id) == list(range(1, EPOCHS + 1))  # each epoch once, none lost
        assert epochs_logged(url, run_id, "val_psnr") == list(range(1, EPOCHS + 1))
    assert same_weights(weights_of(proj), straight)


@pytest.mark.slow
def test_mlflow_unreachable_dvc_repro_train_is_one_line(baseline, tmp_path):
    """Bug 3 as reported: `MLFLOW_TRACKING_URI=http://127.0.0.1:<nothing> dvc repro -f -s
    train` is one line within 30 s; the next plain `dvc repro` completes and is clean."""
    proj = copy_project(baseline, tmp_path / "proj")
    url = f"http://{LOOPBACK}:{_free_port()}"
    started = time.monotonic()
    out = dvc(["repro", "-f", "-s", "train"], proj, check=False, env={"MLFLOW_TRACKING_URI": url})
    took = time.monotonic() - started
    assert out.returncode != 0
    assert "Traceback" not in out.stdout + out.stderr
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("error:")]
    assert lines == [f"error: MLflow server {url} is unreachable (connection refused): start it or unset "
                     "MLFLOW_TRACKING_URI"], out.stdout + out.stderr
    assert took < QUICK, f"{took:.0f} s"
    assert not (proj / paths.RESUME).exists()  # no epoch was run
    dvc(["repro"], proj)
    assert (proj / paths.MODEL).exists()
    assert_clean(proj)


class _AuthServer(BaseHTTPRequestHandler):
    """Answers like a tracking server with basic auth: 401 without the right password."""

    PASSWORD = "right"

    def do_GET(self):  # noqa: N802 - http.server's name
        good = "Basic " + base64.b64encode(f"alice:{self.PASSWORD}".encode()).decode()
        status = 404 if self.headers.get("Authorization") == good else 401
        body = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST" if status == 404 else "UNAUTHENTICATED"})
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_mlflow_server_refusing_credentials_is_one_line(prepared, tmp_path, monkeypatch):  # noqa: F811
    from colorize.common import tracking

    server = ThreadingHTTPServer((LOOPBACK, 0), _AuthServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://{LOOPBACK}:{server.server_address[1]}"
    try:
        proj = copy_of(prepared, tmp_path, "proj")
        started = time.monotonic()
        refused = run_stage(proj, "train", {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "alice",
                                            "MLFLOW_TRACKING_PASSWORD": "wrong"})
        line = the_error_line(refused)
        assert line.startswith(f"error: MLflow server {url} refused the credentials (HTTP 401)"), line
        assert "MLFLOW_TRACKING_USERNAME" in line and "MLFLOW_TRACKING_PASSWORD" in line
        assert time.monotonic() - started < QUICK
        assert not (proj / paths.RESUME).exists()
        # the right password passes the check
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", _AuthServer.PASSWORD)
        tracking.check_store()
    finally:
        server.shutdown()


@pytest.mark.slow
def test_mlflow_run_gone_while_a_checkpoint_waits(prepared, straight, tmp_path):  # noqa: F811
    """Bug 4. Killed mid-training, then mlflow.db moved away: the rerun resumes the
    weights in a new run tagged with the old id, says so in one line, and the new run
    has every epoch's metrics; the old store keeps the old run."""
    proj = copy_of(prepared, tmp_path, "proj")
    epoch = kill_at_first_checkpoint(proj, env={"MLFLOW_TRACKING_URI": sqlite_uri(proj / "mlflow.db")})
    old_run = torch.load(proj / paths.RESUME, weights_only=True)["mlflow_run_id"]
    away = tmp_path / "moved-away.db"
    shutil.move(proj / "mlflow.db", away)

    again = run_stage(proj, "train")  # the project's own mlflow.db, new
    assert again.returncode == 0, again.stderr[-3000:]
    said = [ln for ln in again.stdout.splitlines() if old_run in ln]
    assert len(said) == 1 and "is not in the store" in said[0] and f"after epoch {epoch}" in said[0], again.stdout
    new_run = json.loads((proj / paths.TRAIN_REPORT).read_text())["mlflow_run_id"]
    assert new_run != old_run
    from mlflow import MlflowClient

    uri = sqlite_uri(proj / "mlflow.db")
    assert MlflowClient(uri).get_run(new_run).data.tags["resumed_from_run_id"] == old_run
    for metric in ("train_loss", "val_loss", "val_psnr", "lr"):
        assert epochs_logged(uri, new_run, metric) == list(range(1, EPOCHS + 1)), metric
    # nothing lost there either: the old run is still in the old store (killed before
    # or after it logged the checkpoint's epoch)
    assert MlflowClient(sqlite_uri(away)).get_run(old_run).info.run_id == old_run
    assert set(epochs_logged(sqlite_uri(away), old_run)) <= set(range(1, epoch + 1))
    assert same_weights(weights_of(proj), straight)
    assert not (proj / paths.RESUME).exists()


@pytest.mark.slow
def test_corrupt_mlflow_db_is_one_line_naming_it(prepared, tmp_path):  # noqa: F811
    from mlflow import MlflowClient

    proj = copy_of(prepared, tmp_path, "proj")
    db = proj / "mlflow.db"
    MlflowClient(sqlite_uri(db)).create_experiment("colorize")  # a real store...
    size = db.stat().st_size
    for keep in (0, 100):  # ...garbage all through, or after an intact 100-byte header
        with open(db, "r+b") as f:
            f.seek(keep)
            f.write(os.urandom(size - keep))
        started = time.monotonic()
        broken = run_stage(proj, "train")
        line = the_error_line(broken)
        assert line.startswith(f"error: MLflow store {db.resolve()} ") and f"mv {db.resolve()} " in line, line
        assert time.monotonic() - started < QUICK
        assert not (proj / paths.RESUME).exists()  # no work done
    shutil.move(db, proj / "mlflow.db.broken")  # the advice
    again = run_stage(proj, "train")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (proj / paths.MODEL).exists()


# ============================================================================= disk full


@pytest.mark.slow
def test_disk_full_in_ingest_is_one_line_leaves_no_truncated_shard_and_rerun_completes(tmp_path):
    """data/ on a small tmpfs: download fits, ingest's shards do not. The failure is one
    `error: disk full ...` line, every shard left is whole, nothing a person wrote is
    touched; after space is freed the rerun completes and `dvc status` is clean."""
    shard_size, image_size = 8, 32
    project = make_project(tmp_path / "proj", {**TINY, "ingest.image_size": image_size,
                                               "ingest.shard_size": shard_size})
    data = project / "data"
    kept = {p.relative_to(data): p.read_bytes() for p in data.rglob("*") if p.is_file()}
    with tmpfs(data, 64 << 20):
        for rel, content in kept.items():  # the tracked files (decisions.csv) onto the tmpfs
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            (data / rel).write_bytes(content)
        dvc(["repro", "download"], project)
        shard_bytes = shard_size * image_size * image_size * 3
        resize_tmpfs(data, used_bytes(data) + int(3.5 * shard_bytes))  # room for about three shards

        failed = dvc(["repro", "ingest"], project, check=False, timeout=300)
        assert failed.returncode != 0
        errors = [ln for ln in failed.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
        assert re.fullmatch(r"error: disk full writing data/ingest/\S+ \([\d.]+ (bytes|KB|MB) free\): "
                            r"free some space and rerun \(completed work is kept\)", errors[0]), errors[0]
        shards = data / "ingest" / "shards"
        left = sorted(p.name for p in shards.iterdir())
        assert left and all(re.fullmatch(r"shard-\d{5}\.npy", name) for name in left), left  # no temporary
        for name in left:  # every shard that exists is whole
            assert np.load(shards / name, mmap_mode="r").shape == (shard_size, image_size, image_size, 3)
        assert not (data / "ingest" / "manifest.parquet").exists()

        resize_tmpfs(data, 64 << 20)  # space freed
        dvc(["repro", "ingest"], project, timeout=300)
        assert_clean(project, "download", "ingest")
        manifest = pd.read_parquet(data / "ingest" / "manifest.parquet")
        assert len(manifest) == TINY["data.garden.n_images"] and (manifest["status"] == "ok").sum() > 50
        for rel, content in kept.items():
            assert (data / rel).read_bytes() == content, rel  # decisions.csv untouched


@pytest.mark.slow
def test_disk_full_while_writing_a_checkpoint(prepared, straight, tmp_path):  # noqa: F811
    """models/checkpoints fills up during training: one line, the previous last.pt whole
    (atomic write, no temporary left), and once space is freed the rerun resumes from
    the last complete epoch to the uninterrupted run's weights, each epoch logged once."""
    proj = copy_of(prepared, tmp_path, "proj")
    ckpt = proj / paths.RESUME
    store = {"MLFLOW_TRACKING_URI": sqlite_uri(proj / "mlflow.db")}
    with tmpfs(ckpt.parent, "16m"), training(proj, store) as proc:
        epoch = pause_at_first_checkpoint(proc, ckpt)  # the disk fills while it trains the next epoch
        filler = fill(ckpt.parent, leave=ckpt.stat().st_size // 2)  # room for half a checkpoint
        line = the_error_line(resume_until_exit(proc, timeout=300))
        assert line.startswith(f"error: disk full writing {paths.RESUME} ("), line
        assert torch.load(ckpt, weights_only=True)["epoch"] == epoch  # the previous one, whole
        assert sorted(p.name for p in ckpt.parent.iterdir()) == ["filler", ckpt.name]  # no partial file left
        filler.unlink()  # space freed
        again = run_stage(proj, "train", store)
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"resuming from {paths.RESUME} after epoch {epoch}" in again.stdout
    assert same_weights(weights_of(proj), straight)
    run_id = json.loads((proj / paths.TRAIN_REPORT).read_text())["mlflow_run_id"]
    assert epochs_logged(store["MLFLOW_TRACKING_URI"], run_id) == list(range(1, EPOCHS + 1))


@pytest.mark.slow
def test_disk_full_in_curates_mlflow_logging(baseline, tmp_path):
    """The MLflow store and artifacts on a full tmpfs: curate ends with one line, and
    once space is freed the rerun completes and logs; decisions.csv is untouched."""
    from mlflow import MlflowClient

    # The baseline's relevance scores are there, as in the pipeline; curate builds its
    # review dataset afresh (the copy has no FiftyOne database).
    proj = copy_project(baseline, tmp_path / "proj")
    csv = (proj / paths.DECISIONS).read_bytes()
    with tmpfs(tmp_path / "disk", "4m") as disk:
        uri = sqlite_uri(disk / "mlflow.db")
        MlflowClient(uri).create_experiment("colorize", artifact_location=(disk / "mlartifacts").as_uri())
        filler = fill(disk)
        full = run_stage(proj, "curate", {"MLFLOW_TRACKING_URI": uri})
        assert the_error_line(full).startswith("error: disk full "), full.stderr[-2000:]
        filler.unlink()
        again = run_stage(proj, "curate", {"MLFLOW_TRACKING_URI": uri})
        assert again.returncode == 0, again.stderr[-3000:]
        runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("colorize").experiment_id],
                                             filter_string="tags.stage = 'curate' and attributes.status = 'FINISHED'")
        assert len(runs) == 1 and "kept" in runs[0].data.metrics
    assert (proj / paths.DECISIONS).read_bytes() == csv


# ============================================================================= tampered checkpoints


def _bomb(levels: int = 40) -> list:
    """Nested lists sharing their items: a few hundred KB pickled, 3**40 items unrolled."""
    bomb: list = ["lol"]
    for _ in range(levels):
        bomb = [bomb, bomb, bomb]
    return bomb


def cli_measured(tmp_path: Path, *args) -> tuple[subprocess.CompletedProcess, float, float]:
    """The colorize CLI in a child process: (result, seconds, the child's peak RSS in MB)."""
    cmd = [sys.executable, "-m", "colorize.cli.colorize", *map(str, args)]
    started = time.monotonic()
    with open(tmp_path / "stdout", "w+") as out, open(tmp_path / "stderr", "w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err)
        while not (waited := os.wait4(proc.pid, os.WNOHANG))[0]:  # wait4: the rusage of this child alone
            if time.monotonic() - started > 90:
                proc.kill()  # a hang: the assertions below say so
            time.sleep(0.05)
        _, status, usage = waited
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        result = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    return result, seconds, usage.ru_maxrss / 1024


@pytest.mark.parametrize("attack", ["huge model", "billion laughs in a number", "billion laughs in a list"])
def test_tampered_checkpoint_is_one_line_fast(tmp_path, attack):
    """Checkpoint params that describe a 4.8 GB model, or hold a "billion laughs" (a
    repr of astronomic length): the colorize CLI refuses them in one short line, in
    seconds, without ever allocating the model."""
    path = save_like_train(tmp_path / "model.pt", _params())
    ckpt = torch.load(path, weights_only=True)
    if attack == "huge model":
        ckpt["args"]["train"].update(width=1024, depth=6, crop=0)
        ckpt["args"]["ingest"]["image_size"] = 64
    elif attack == "billion laughs in a number":
        ckpt["args"]["train"]["width"] = _bomb()
    else:
        ckpt["args"]["train"]["lr"] = [0.5, _bomb()]
    torch.save(ckpt, path)
    Image.new("L", (16, 16), 120).save(tmp_path / "a.png")
    proc, seconds, rss_mb = cli_measured(tmp_path, tmp_path / "a.png", "-o", tmp_path / "out", "--model", path)
    line = the_error_line(proc)
    assert line.startswith(f"error: {path}: "), line
    assert len(line) < 500 and seconds < 20, (len(line), seconds)
    assert rss_mb < 1500, f"peak RSS {rss_mb:.0f} MB"  # torch alone is ~400 MB; the model would be 4.8 GB
    if attack == "huge model":
        assert "weights do not fit the unet width 1024 depth 6 model" in line, line
    else:
        assert "checkpoint params: " in line, line
    assert not (tmp_path / "out").exists()


# ============================================================================= params


@pytest.mark.slow
def test_unknown_top_level_param_fails_dvc_repro(baseline, tmp_path):
    """Item 7: a key no stage tracks is validated too, by the `params` stage; fixed, the
    pipeline is up to date again without rerunning anything else."""
    proj = copy_project(baseline, tmp_path / "proj")
    good = (proj / "params.yaml").read_text()
    params = yaml.safe_load(good)
    params["trian"] = {"epochs": 5}  # meant train.epochs
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(["repro"], proj, check=False)
    (proj / "params.yaml").write_text(good)  # fixed
    assert out.returncode != 0
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("error:")]
    assert lines == ["error: trian: unknown key (did you mean 'train'?)"], out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    again = dvc(["repro"], proj)
    assert "Running stage" not in again.stdout, again.stdout
    assert_clean(proj)


# ============================================================================= bad input files
# What DVC itself does with such entries in a dependency folder (it hashes every file of
# data.folder.path before any project code runs) is pinned by
# test_dvc_on_special_files_in_a_dependency_folder, so a DVC upgrade that changes it shows.


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.zeros((h, w, 3), np.uint8)
    base[..., 0] = np.linspace(30, 230, w)[None]
    base[..., 1] = np.linspace(200, 40, h)[:, None]
    base[..., 2] = 90 + 40 * seed % 120
    return np.clip(base.astype(int) + rng.integers(0, 12, base.shape), 0, 255).astype(np.uint8)


def make_special_files(folder: Path) -> dict[str, str]:
    """A FIFO, a socket, a character device (/dev/zero's numbers: reading never ends), a
    dangling link and a link loop in `folder`: {name: the status ingest must give it}."""
    os.mkfifo(folder / "pipe.jpg")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(folder / "sock.jpg"))  # the socket file stays after close
    try:
        os.mknod(folder / "zero.jpg", stat.S_IFCHR | 0o644, os.makedev(1, 5))
    except PermissionError:
        cannot("mknod of a character device needs root")
    (folder / "gone.jpg").symlink_to("no_such_file.jpg")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    return {"pipe.jpg": "not_regular_file", "sock.jpg": "not_regular_file", "zero.jpg": "not_regular_file",
            "gone.jpg": "broken_link", "loop.jpg": "broken_link"}


def read_manifest(project: Path) -> pd.DataFrame:
    return pd.read_parquet(project / "data" / "ingest" / "manifest.parquet").set_index("relpath")


def test_special_files_in_the_folder_get_a_reason_and_are_never_opened(tmp_path):
    """A FIFO, a socket, a device, a dangling link, a link loop and a symlinked folder in
    data.folder.path: download names each, ingest gives each a manifest row with a status
    (nothing hangs), the counts reconcile, and `dvc status` is clean. DVC's own hashing of
    the folder would hang or fail on them (see the next test), so they are named in
    .dvcignore, the workaround the README gives."""
    project = make_project(tmp_path / "proj", {**TINY, "data.sources": ["folder"]})
    folder = project / "data" / "folder"
    (folder / "roses").mkdir()
    for i in range(3):
        Image.fromarray(photo(40, 50, i)).save(folder / "roses" / f"r{i}.jpg", quality=90)
    expected = make_special_files(folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(photo(40, 50, 9)).save(elsewhere / "x.jpg")
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)  # neither os.walk nor DVC descends
    expected["linked"] = "not_regular_file"
    with open(project / ".dvcignore", "a") as f:
        f.write("".join(f"/data/folder/{name}\n" for name in expected if name != "linked"))
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "special files"], project)

    done = run_bounded([DVC, "repro", "ingest"], project, timeout=240)
    assert done is not None, "dvc repro ingest hung on a special file"
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for name in expected:  # download named each one
        assert re.search(rf"download: folder: \S*data/folder/{name}: .+ \(listed as {expected[name]}\)",
                         done.stderr), (name, done.stderr[-3000:])
    m = read_manifest(project)
    assert set(m.index) == {f"roses/r{i}.jpg" for i in range(3)} | set(expected)
    for name, status in expected.items():
        assert m.loc[name, "status"] == status and m.loc[name, "shard"] == -1, (name, m.loc[name].to_dict())
        assert m.loc[name, "error"] and "\n" not in m.loc[name, "error"]
    assert "FIFO" in m.loc["pipe.jpg", "error"] and "socket" in m.loc["sock.jpg", "error"]
    assert "character device" in m.loc["zero.jpg", "error"] and "dangling" in m.loc["gone.jpg", "error"]
    assert "loop" in m.loc["loop.jpg", "error"] and "folder (not followed)" in m.loc["linked", "error"]
    report = pd.read_json(project / "reports" / "ingest.json", typ="series")
    assert report["found"] == 3 + len(expected) and report["usable"] == 3
    assert report["usable"] + report["rejected"] == report["found"]
    assert_clean(project, "download", "ingest")


@pytest.mark.slow
def test_dvc_on_special_files_in_a_dependency_folder(tmp_path):
    """Pins what DVC 3 itself does when it hashes data.folder.path (a dependency of the
    download stage) before any project code runs; the README documents it. A dangling
    link, a link loop and a socket: `dvc status` exits 255 with `ERROR: unexpected error -
    [Errno N] ...: '<path>'`; a FIFO: it blocks in open() for ever; a symlinked folder
    is not descended into (a change there is not seen). A name in .dvcignore avoids each."""
    project = make_project(tmp_path / "proj", {**TINY, "data.sources": ["folder"]})
    folder = project / "data" / "folder"
    Image.fromarray(photo(40, 50)).save(folder / "a.jpg")
    dvc(["repro", "download"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "download"], project)

    def status_with(make, name: str, timeout: float = 60):
        make(folder / name)
        try:
            return run_bounded([DVC, "status", "download"], project, timeout=timeout)
        finally:
            (folder / name).unlink()

    def bind(path):
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))

    for make, errno_text in [(lambda p: p.symlink_to("nowhere.jpg"), r"\[Errno 2\] No such file or directory"),
                             (lambda p: p.symlink_to(p.name), r"\[Errno 40\] Too many levels of symbolic links"),
                             (bind, r"\[Errno 6\] No such device or address")]:
        proc = status_with(make, "bad.jpg")
        assert proc is not None and proc.returncode == 255, proc and proc.stderr
        assert re.search(rf"ERROR: unexpected error - {errno_text}: '\S*data/folder/bad.jpg'", proc.stderr), proc.stderr
    assert status_with(os.mkfifo, "pipe.jpg", timeout=8) is None, "DVC no longer hangs on a FIFO: update the README"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(photo(40, 50, 1)).save(elsewhere / "x.jpg")
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    assert_clean(project, "download")  # not descended into
    (folder / "linked").unlink()

    os.mkfifo(folder / "pipe.jpg")
    (project / ".dvcignore").write_text((project / ".dvcignore").read_text() + "/data/folder/pipe.jpg\n")
    proc = run_bounded([DVC, "status", "download"], project, timeout=60)
    assert proc is not None and proc.returncode == 0, "a .dvcignore name should spare DVC the FIFO"


def test_colorize_skips_special_files_and_fails_broken_links_with_one_line_each(tmp_path):
    """Old code: the FIFO blocked colorize for ever and a link loop crashed it in find_inputs."""
    ckpt = save_like_train(tmp_path / "tiny.pt", _params())
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(2):
        Image.fromarray(photo(20, 24, i)).save(src / f"ok{i}.png")
    expected = make_special_files(src)
    proc = run_bounded([sys.executable, "-m", "colorize.cli.colorize", str(src), "-o", str(out), "--model", str(ckpt)],
                       cwd=ROOT, timeout=120)
    assert proc is not None, "colorize hung on a special file"
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr  # broken links failed
    assert proc.stdout.strip().splitlines()[-1] == "colorize: 2 written, 2 failed, 3 skipped"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(expected), proc.stderr
    for name, status in expected.items():
        line = next(ln for ln in lines if ln.startswith(f"colorize: {src / name}: "))
        assert ("skipped: " in line) == (status == "not_regular_file"), line
    assert sorted(p.name for p in out.iterdir()) == ["ok0.png", "ok1.png"]


def _frames(n: int, size=(30, 20)) -> list[Image.Image]:
    return [Image.fromarray(np.full((size[1], size[0], 3), (40 * i % 256, 200, 90 + 7 * i % 160), np.uint8))
            for i in range(n)]


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF"])
def test_animation_uses_its_first_frame_and_says_so(fmt):
    frames = _frames(5)
    buf = io.BytesIO()
    options = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], **options)
    d = decode(buf.getvalue(), 10_000_000)
    assert d.status == "ok" and "animated: first of 5 frames" in d.notes, d.notes
    assert np.abs(d.pixels.astype(int) - np.asarray(frames[0])).max() <= 2  # the first frame's pixels
    single = io.BytesIO()
    frames[0].save(single, fmt, **options)
    assert "animated" not in decode(single.getvalue(), 10_000_000).notes


# Found by the fuzz below: 211 bytes of GIF whose second frame claims 5696x23552 px.
# Counting frames by seeking grew the canvas past the max_pixels check and decoded
# 134 Mpx (3 s, 400 MB) for a 24x16 image; counting must parse frame headers only.
GROWING_GIF = base64.b64decode(
    "R0lGODdhGAAQAIEAAADIWgAAAAAAAAAAACwAAAAAGAAQAAAIIgABCBxIsKDBgwgTKlzIsKHDhxAjSpxIsaLFixgzatxo"
    "MCAAIfkEAQAAAQAsAAAAREAWABgAEACBKMhhAAAAAAAAAAAACCIAAQgcSLCgwYMIEypcyLChw4cQI0qcSLGixYsYM2rc"
    "aDAgACH5BAEAAAEALAAAAAAYABAQAIFQyGgAAAAAAAAAAAAIIgABCBxIsKDBgwgTKlzIsKHDhxAjSpxIsaLFixgzatxo"
    "MCAAOw==")


def test_counting_frames_decodes_none_of_them():
    d = decode(GROWING_GIF, 4_000_000)
    assert d.status == "ok" and d.pixels.shape == (16, 24, 3) and d.notes.startswith("animated: first of 3 frames")


# ============================================================================= decoder fuzz

FUZZ_MAX_PIXELS = 4_000_000  # a mutated header may claim any size: keep the fuzz in memory
FUZZ_SECONDS_PER_INPUT = 10  # far above any real decode of these small files (~1-20 ms)


def _encode(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def _seed_files() -> list[bytes]:
    """Real JPEGs (and a PNG of one) from ../shared/data/flowers-128 when present, else
    made here; plus every other container the decoder meets, made here."""
    flowers = SHARED_DATA / "flowers-128"
    if flowers.is_dir():
        real = [sorted(d.glob("*.jpg"))[0].read_bytes() for d in sorted(p for p in flowers.iterdir() if p.is_dir())][:3]
    else:
        real = [_encode(Image.fromarray(photo(48, 64, i)), "JPEG", quality=85) for i in range(3)]
    base = Image.open(io.BytesIO(real[0])).convert("RGB").resize((48, 40))
    frames = _frames(3, size=(24, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    icc = imageio.ImageCms.ImageCmsProfile(imageio._SRGB_PROFILE).tobytes()
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    return real + [
        _encode(base, "PNG"),
        _encode(rgba, "PNG", icc_profile=icc),
        _encode(Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)), "PNG"),
        _encode(base, "JPEG", quality=80, progressive=True, exif=exif),
        _encode(base.convert("CMYK"), "JPEG", quality=80),
        _encode(base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "GIF"),
        _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        _encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        _encode(base, "TIFF", compression="tiff_lzw"),
        _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        _encode(base, "WEBP", quality=70),
        _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True),
        _encode(base, "BMP"),
        _encode(base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "BMP"),
    ]


SEEDS = _seed_files()
_position = st.integers(0, 1 << 16)
_MUTATION = st.one_of(
    st.tuples(st.just("flip"), _position, st.integers(0, 7)),
    st.tuples(st.just("truncate"), _position),
    st.tuples(st.just("insert"), _position, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("remove"), _position, st.integers(1, 512)),
    st.tuples(st.just("duplicate"), _position, st.integers(1, 512)),
    st.tuples(st.just("splice"), _position, st.integers(0, len(SEEDS) - 1), _position, st.integers(1, 512)),
    # header fields turned into extremes: sizes, counts, offsets
    st.tuples(st.just("overwrite"), _position, st.sampled_from([b"\x00", b"\xff", b"\x7f", b"\x80"]), st.integers(1, 4)),
)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    b = bytearray(data)
    for kind, pos, *args in mutations:
        pos = pos % (len(b) + 1)
        if kind == "flip" and pos < len(b):
            b[pos] ^= 1 << args[0]
        elif kind == "truncate":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = args[0]
        elif kind == "remove":
            del b[pos:pos + args[0]]
        elif kind == "duplicate":
            b[pos:pos] = b[pos:pos + args[0]]
        elif kind == "splice":
            other = SEEDS[args[0]]
            start = args[1] % len(other)
            b[pos:pos] = other[start:start + args[2]]
        elif kind == "overwrite":
            b[pos:pos + args[1]] = args[0] * args[1]
    return bytes(b)


class DecodeHung(Exception):
    pass


def _alarm(signum, frame):
    raise DecodeHung(f"no result within {FUZZ_SECONDS_PER_INPUT} s")


def check_decodes_safely(data: bytes, draft_size: int | None) -> str:
    """decode as ingest calls it (then fit_square), under a time guard: never raises,
    never hangs, always a status of STATUSES; ok means usable pixels."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, FUZZ_SECONDS_PER_INPUT)
    try:
        d = decode(data, FUZZ_MAX_PIXELS, draft_size=draft_size)
        if d.status == "ok":
            assert d.pixels is not None and d.pixels.dtype == np.uint8 and d.pixels.ndim == 3
            assert d.pixels.shape[2] == 3 and min(d.pixels.shape[:2]) >= 1 and d.width * d.height >= 1
            assert fit_square(d.pixels, 16).shape == (16, 16, 3)
        else:
            assert d.pixels is None and d.error and "\n" not in d.error and len(d.error) <= 300
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert d.status in STATUSES, d.status
    return d.status


def test_fuzz_seeds_decode_ok():
    for i, data in enumerate(SEEDS):
        assert check_decodes_safely(data, None) == "ok", i


@settings(max_examples=400, derandomize=True, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, len(SEEDS) - 1), mutations=st.lists(_MUTATION, min_size=1, max_size=4),
       draft=st.sampled_from([None, 32]))
def test_fuzz_decoder_never_crashes_or_hangs(seed, mutations, draft):
    check_decodes_safely(mutate(SEEDS[seed], mutations), draft)
