"""Faults around FiftyOne's database and the review App (issue 13), with the real parts:
a tiny project reproduced by real `dvc repro`, the project's own mongod, the real App
from `python -m pipeline.review app`, tags set through the App server's `/tag` route
(the one its UI calls), and real signals.

After each fault: the rerun completes, `dvc status` is clean, and no decision is lost
(decisions.csv and the App's tags), and no mongod or App server is left behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import psutil
import pymongo
import pytest

from pipeline import fodb, review
from tests.conftest import ROOT, TINY, bin_path, make_project, run
from tests.test_review_app import _answers, _free_port, running_app

DB = Path(".fiftyone/db")
CURATED = Path("data/curated/manifest.parquet")
STOP_S = 20  # the App must be gone this soon after a signal (export, server, mongod included)


# ----------------------------------------------------------------------------- the project


@pytest.fixture(scope="module")
def curated_project(tmp_path_factory) -> Path:
    """A tiny project after `dvc repro curate`, with two decisions in git; built once."""
    proj = make_project(tmp_path_factory.mktemp("faults-db") / "proj", TINY)
    run([bin_path("dvc"), "repro", "curate"], proj)
    ok = sorted(pd.read_parquet(proj / CURATED).query("status == 'ok'")["id"])
    review.write_decisions(pd.DataFrame([
        {"id": ok[0], "decision": "reject", "reason": "irrelevant", "time": "2026-01-01T00:00:00Z"},
        {"id": ok[1], "decision": "keep", "reason": "", "time": "2026-01-01T00:00:00Z"},
    ]), proj / review.DECISIONS)
    run([bin_path("dvc"), "repro", "curate"], proj)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "curated, two decisions"], proj)
    assert_clean(proj)
    return proj


@pytest.fixture
def project(curated_project, tmp_path) -> Path:
    """A copy of the curated project for one test (tests change it). mongod's preallocated
    journal files are left behind: it makes new ones."""
    proj = tmp_path / "proj"
    shutil.copytree(curated_project, proj, symlinks=True, ignore=shutil.ignore_patterns("WiredTigerPreplog.*"))
    try:
        yield proj
    finally:
        for p in mongods_on(proj / DB):  # whatever a failing test left behind
            with contextlib.suppress(psutil.Error):
                p.kill()


def env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}


def assert_clean(proj: Path) -> None:
    out = run([bin_path("dvc"), "status", "curate"], proj).stdout
    assert "up to date" in out, out


def sync(proj: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pipeline.review", "sync"], proj, check=check, timeout=300)


def repro_applies(proj: Path, expected: list[list[str]]) -> None:
    """The rerun: `dvc repro` takes decisions.csv as it is now, and the curated manifest
    carries every decision."""
    assert sorted(decisions(proj)) == sorted(expected)
    run([bin_path("dvc"), "repro", "curate"], proj)
    assert_clean(proj)
    human = pd.read_parquet(proj / CURATED).set_index("id")["human"]
    assert {i: human[i] for i, _, _ in expected} == {i: d for i, d, _ in expected}


def decisions(proj: Path) -> list[list[str]]:
    return review.read_decisions(proj / review.DECISIONS)[["id", "decision", "reason"]].values.tolist()


def undecided(proj: Path, n: int) -> list[str]:
    """Ids of n readable samples nobody decided on yet."""
    done = {d[0] for d in decisions(proj)}
    return [i for i in sorted(pd.read_parquet(proj / CURATED).query("status == 'ok'")["id"]) if i not in done][:n]


# ----------------------------------------------------------------------------- processes


def mongods_on(dbpath: Path) -> list[psutil.Process]:
    """Live mongods serving this data directory, whoever started them."""
    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if p.info["name"] == "mongod" and p.info["status"] != psutil.STATUS_ZOMBIE and "--dbpath" in cmd:
            if Path(cmd[cmd.index("--dbpath") + 1]).resolve() == dbpath.resolve():
                found.append(p)
    return found


def wait_until(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def alive(procs: list[psutil.Process]) -> list[str]:
    """The command lines of those still running."""
    running = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                running.append(" ".join(p.cmdline()))
    return running


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def served_dbpath(uri: str) -> Path | None:
    """The data directory of the mongod answering at `uri`, in its own words."""
    try:
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=1000) as client:
            return Path(client.admin.command("getCmdLineOpts")["parsed"]["storage"]["dbPath"]).resolve()
    except pymongo.errors.PyMongoError:
        return None


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


# ----------------------------------------------------------------------------- the App


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


def app_env() -> dict:
    e = env()
    for name in ("FIFTYONE_DATABASE_URI", "FIFTYONE_PRIVATE_DATABASE_PORT", "PYTHONPATH"):
        e.pop(name, None)  # the project's own mongod, the project's own code
    return e


def ignore_sigint() -> None:
    """What a command started with `&` from a script inherits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


STOPS = {
    "SIGINT, inherited as ignored": (signal.SIGINT, ignore_sigint),
    "SIGTERM": (signal.SIGTERM, None),
    "SIGHUP (terminal closed)": (signal.SIGHUP, None),
}


@pytest.mark.parametrize("how", STOPS)
def test_app_saves_decisions_when_stopped_by_a_signal(project, tmp_path, how):
    """Tags set in the App are in decisions.csv however the App is stopped, it exits
    promptly, and neither its server nor its mongod outlives it."""
    sig, preexec = STOPS[how]
    before = decisions(project)
    reject, keep = undecided(project, 2)
    with running_app(project, app_env(), tmp_path / "app.log", preexec_fn=preexec) as app:
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


def test_app_killed_then_sync_recovers_the_tags(project, tmp_path):
    """`make sync` while the App is open shares the App's mongod and leaves it running; the
    App then killed with SIGKILL takes its mongod with it, and the next `review sync` finds
    every tag in the database."""
    before = decisions(project)
    first, second = undecided(project, 2)
    with running_app(project, app_env(), tmp_path / "app.log") as app:
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


# ----------------------------------------------------------------------------- mongod's life


def start_curate(proj: Path) -> subprocess.Popen:
    """`dvc repro -f -s curate` in a session of its own, as from a terminal: Ctrl-C there
    reaches its whole process group."""
    return subprocess.Popen([bin_path("dvc"), "repro", "-f", "-s", "curate"], cwd=proj, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def child_mongod(proc: subprocess.Popen, timeout: float = 300) -> psutil.Process:
    """The mongod that a run of curate starts, as soon as it appears."""
    found: list[psutil.Process] = []

    def appeared() -> bool:
        found[:] = [p for p in descendants(proc.pid) if p.name() == "mongod"]
        return bool(found) or proc.poll() is not None

    assert wait_until(appeared, timeout, 0.02) and found, f"no mongod started:\n{proc.communicate()[0][-3000:]}"
    return found[0]


def rerun_works(proj: Path, decided: list) -> None:
    run([bin_path("dvc"), "repro", "-f", "-s", "curate"], proj)  # forced: starts a mongod again
    assert_clean(proj)
    synced = sync(proj)
    assert "rebuilding" not in synced.stderr  # curate's dataset is there
    assert decisions(proj) == decided


@pytest.mark.parametrize("how", ["Ctrl-C", "SIGKILL of curate"])
def test_curate_stopped_while_mongod_starts_leaves_no_mongod(project, how):
    """Ctrl-C (SIGINT to the terminal's process group) or kill -9 of curate while its mongod
    starts: no mongod survives on the project's data directory, and the next run works."""
    decided = decisions(project)
    curate = start_curate(project)
    mongod = child_mongod(curate)
    in_startup = not (project / DB / fodb.PORT_FILE).exists()
    if how == "Ctrl-C":
        os.killpg(curate.pid, signal.SIGINT)
    else:
        curate_py = [p for p in descendants(curate.pid) if p.cmdline()[-2:] == ["-m", "pipeline.curate"]]
        curate_py[0].kill()
    out = curate.communicate(timeout=120)[0]
    assert curate.returncode != 0, out[-3000:]
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
    assert_clean(project)


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
    assert_clean(project)


def test_mongod_killed_during_curate_is_one_line(project):
    """kill -9 of mongod while curate uses it: curate fails within seconds with one line
    naming it (not pymongo's 30 s wait and traceback), and the rerun works."""
    decided = decisions(project)
    curate = start_curate(project)
    mongod = child_mongod(curate)
    assert wait_until(lambda: (project / DB / fodb.PORT_FILE).exists() or curate.poll() is not None, 120)
    mongod.kill()  # serving: curate is importing fiftyone to sync, or syncing
    killed = time.monotonic()
    out = curate.communicate(timeout=120)[0]
    fail_s = time.monotonic() - killed
    print(f"\ncurate failed {fail_s:.1f} s after mongod was killed\n{out[-3000:]}")
    assert curate.returncode != 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mongod stopped while in use" in errors[0], out[-3000:]
    assert fail_s < 25, f"took {fail_s:.0f} s to notice"
    rerun_works(project, decided)


# ----------------------------------------------------------------------------- a lost database


def test_a_deleted_database_is_rebuilt_from_the_curated_manifest(project):
    """`rm -rf .fiftyone/db`: `review sync` rebuilds the dataset itself (dvc would skip
    curate), says so, and decisions.csv is unchanged, byte for byte."""
    csv = (project / review.DECISIONS).read_bytes()
    shutil.rmtree(project / DB)
    synced = sync(project)
    assert "rebuilding it from data/curated/manifest.parquet" in synced.stderr, synced.stderr[-3000:]
    assert (project / review.DECISIONS).read_bytes() == csv
    again = sync(project)
    assert "rebuilding" not in again.stderr  # the rebuilt dataset stayed
    assert (project / review.DECISIONS).read_bytes() == csv
    assert_clean(project)


def test_a_deleted_database_and_manifest_give_advice_that_works(project):
    """Without the curated manifest either: one line whose advice, followed, works."""
    decided = decisions(project)
    shutil.rmtree(project / DB)
    shutil.rmtree(project / CURATED.parent)
    synced = sync(project, check=False)
    assert synced.returncode == 2, synced.stderr[-3000:]
    lines = synced.stderr.strip().splitlines()
    assert len(lines) == 1 and "`dvc repro -f -s curate`" in lines[0], synced.stderr[-3000:]
    run([bin_path("dvc"), "repro", "-f", "-s", "curate"], project)
    assert_clean(project)
    assert "rebuilding" not in sync(project).stderr
    assert decisions(project) == decided


SHARER = """
import sys, time, pathlib
import pymongo
from pipeline import fodb
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
    environment = {**env(), "FIFTYONE_DATABASE_DIR": str(dbpath), "PYTHONPATH": str(ROOT)}
    environment.pop("FIFTYONE_DATABASE_URI", None)

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
