"""The MLflow UI's compare-runs page, for real: two runs logged with the mlflow API into a
temp sqlite store, a real `mlflow server` on a free loopback port, and the page opened in
Debian's chromium by tests/browser/mlflow_compare.mjs (playwright-core), waiting in real
time until both runs, their parameter and their metrics are on the page.

Like tests/test_review_app.py, it needs `make browser` (chromium, node and
tests/browser/node_modules): without them it skips locally and fails under CI=true.
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
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from tests.conftest import ROOT

BROWSER_DIR = ROOT / "tests" / "browser"
SERVER_START_TIMEOUT = 90  # s; `mlflow server` takes 10-15 s on an idle machine
LOOPBACK = "127.0.0.1"

# Two runs as train.py logs them: the model as a param, per-epoch validation metrics and
# a final test metric. Values are distinct so each run's column can be told apart, and
# have at most 3 decimals: the compare page rounds metrics to 3 (0.0417 shows as 0.042).
RUNS = {
    "unet-run": {"model": "unet", "val_psnr": [21.2, 22.9, 24.13], "val_loss": [0.081, 0.052, 0.043],
                 "test_psnr": 24.51},
    "zhang-run": {"model": "zhang", "val_psnr": [20.1, 21.4, 22.06], "val_loss": [0.093, 0.071, 0.061],
                  "test_psnr": 22.37},
}


# ----------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200 and r.read().strip() == b"OK"
    except (urllib.error.URLError, OSError):
        return False


def _family(pid: int) -> list[psutil.Process]:
    """The process and everything it started (uvicorn and its workers)."""
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _listening(family: list[psutil.Process]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the processes listen on."""
    out = set()
    for p in family:
        with contextlib.suppress(psutil.Error):
            for c in p.net_connections(kind="tcp"):  # v4 and v6
                if c.status == psutil.CONN_LISTEN:
                    out.add((c.laddr.ip, c.laddr.port))
    return out


def _stop(proc: subprocess.Popen, family: list[psutil.Process]) -> None:
    """SIGTERM to the server, then kill whatever of its family is still there."""
    family = list({p.pid: p for p in [*family, *_family(proc.pid)]}.values())  # and any started since
    for p in (p for p in family if p.pid != proc.pid):  # uvicorn too, with the CLI: a faster way out
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _, alive = psutil.wait_procs(family, timeout=20)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    _, alive = psutil.wait_procs(alive, timeout=10)
    assert not alive, f"left running: {alive}"


def _log_runs(uri: str, artifacts: Path | None) -> tuple[str, list[str]]:
    """The two runs, through the mlflow client API (no global tracking state touched)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("colorize-compare", artifact_location=artifacts.as_uri() if artifacts else None)
    ids = []
    for name, run in RUNS.items():
        r = client.create_run(exp_id, run_name=name)
        client.log_param(r.info.run_id, "train.model", run["model"])
        for step, (psnr, loss) in enumerate(zip(run["val_psnr"], run["val_loss"])):
            client.log_metric(r.info.run_id, "val_psnr", psnr, step=step)
            client.log_metric(r.info.run_id, "val_loss", loss, step=step)
        client.log_metric(r.info.run_id, "test_psnr", run["test_psnr"])
        client.set_terminated(r.info.run_id)
        ids.append(r.info.run_id)
    return exp_id, ids


def _sqlite_server(tmp_path):
    """A real `mlflow server` on a sqlite store holding the runs; one per module."""
    db = tmp_path / "mlflow.db"
    artifacts = tmp_path / "mlartifacts"
    artifacts.mkdir()
    uri = f"sqlite:///{db}"  # sqlite:////abs/path/mlflow.db
    assert uri.startswith("sqlite:////")
    exp_id, run_ids = _log_runs(uri, artifacts)

    port = _free_port()
    # No job execution: else the server starts a job runner and eight huey consumers (on a
    # 2-core machine), and leaves their store in /dev/shm/tmp* behind when it stops.
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_TRACKING_URI": uri,
           "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "server.log"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", uri,
           "--default-artifact-root", str(artifacts), "--host", LOOPBACK, "--port", str(port),
           "--workers", "1"]  # one uvicorn worker: starts in half the time of the default 4
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    url = f"http://{LOOPBACK}:{port}"
    started = time.monotonic()
    family: list[psutil.Process] = []
    try:
        while not _health(url):
            family = _family(proc.pid) or family
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}")
            if time.monotonic() - started > SERVER_START_TIMEOUT:
                pytest.fail(f"mlflow server did not answer on {url} in {SERVER_START_TIMEOUT} s:\n"
                            f"{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        family = _family(proc.pid)
        yield {"url": url, "port": port, "exp_id": exp_id, "run_ids": run_ids, "log": log_path,
               "family": family, "start_s": round(time.monotonic() - started, 1), "auth": None}
    finally:
        _stop(proc, family)
        assert not _health(url), f"something still answers on {url}"


def _team_server():
    """The team's server (colorize/team/services.py): PostgreSQL, artifacts proxied to
    SeaweedFS's S3, basic auth; the runs logged with the admin's credentials."""
    from colorize.team import services
    from tests.test_team import stack_root_or_skip

    root = stack_root_or_skip()
    stack = services.Stack.load_or_create(root, {n: services.free_port() for n in services.DEFAULT_PORTS})
    auth = {"MLFLOW_TRACKING_USERNAME": services.MLFLOW_ADMIN, "MLFLOW_TRACKING_PASSWORD": stack.secrets["mlflow_admin"]}
    saved = {k: os.environ.get(k) for k in auth}
    try:
        started = time.monotonic()
        stack.start_object_store()  # the parts the server needs; no MongoDB
        stack.start_postgres()
        stack.start_mlflow()
        start_s = round(time.monotonic() - started, 1)
        os.environ.update(auth)
        exp_id, run_ids = _log_runs(stack.mlflow_url, None)
        pid = int((root / "mlflow.pid").read_text())
        yield {"url": stack.mlflow_url, "port": stack.ports["mlflow"], "exp_id": exp_id, "run_ids": run_ids,
               "log": root / "mlflow.log", "family": _family(pid), "start_s": start_s,
               "auth": (services.MLFLOW_ADMIN, stack.secrets["mlflow_admin"])}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)



@pytest.fixture(scope="module", params=["sqlite", "team"])
def mlflow_server(request, tmp_path_factory):
    """A real `mlflow server` holding two runs, on a free loopback port: on a sqlite store,
    and as the team runs it (PostgreSQL, S3 artifacts, basic auth)."""
    if request.param == "sqlite":
        yield from _sqlite_server(tmp_path_factory.mktemp("mlflow-ui"))
    else:
        yield from _team_server()


# ----------------------------------------------------------------------------- the test


def test_server_listens_on_loopback_only(mlflow_server):
    listening = _listening(mlflow_server["family"])
    assert (LOOPBACK, mlflow_server["port"]) in listening, listening
    assert {ip for ip, _ in listening} == {LOOPBACK}, f"listens beyond loopback: {listening}"
    # And a connection to any other address of this machine, on that port, is refused.
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                with socket.socket() as s, pytest.raises(OSError):
                    s.settimeout(2)
                    s.connect((a.address, mlflow_server["port"]))


def test_compare_runs_page_renders_both_runs(browser_tools, mlflow_server, tmp_path):
    """Both runs, their `train.model` and their latest metrics render in the compare page,
    the parallel-coordinates chart is drawn, and the page asks nothing of any host but
    127.0.0.1."""
    srv = mlflow_server
    id1, id2 = srv["run_ids"]
    # As the UI's own "Compare" button builds it (getCompareRunPageRoute in MLflow 3.17).
    url = (f"{srv['url']}/#/compare-runs?runs={json.dumps(srv['run_ids'], separators=(',', ':'))}"
           f"&experiments={json.dumps([srv['exp_id']])}")
    last = {name: {k: run[k][-1] for k in ("val_psnr", "val_loss")} | {"test_psnr": run["test_psnr"]}
            for name, run in RUNS.items()}
    expected = ["Comparing 2 Runs from 1 Experiment", *RUNS, "train.model", "val_psnr", "val_loss", "test_psnr",
                *(str(v) for m in last.values() for v in m.values())]
    shot = tmp_path / "compare.png"
    cmd = ["node", str(BROWSER_DIR / "mlflow_compare.mjs"), url, json.dumps(expected), str(shot)]
    started = time.monotonic()
    env = {**os.environ}
    if srv["auth"]:  # the team's server: basic auth, as a person's browser sends it
        env.update(BROWSER_HTTP_USERNAME=srv["auth"][0], BROWSER_HTTP_PASSWORD=srv["auth"][1])
    proc = subprocess.run(cmd, cwd=BROWSER_DIR, capture_output=True, text=True, timeout=180, env=env, check=False)
    browser_s = time.monotonic() - started
    context = (f"\nscreenshot: {shot}\nstderr: {proc.stderr[-3000:]}\n"
               f"server log: {srv['log'].read_text(errors='replace')[-3000:]}")
    assert proc.stdout.strip(), f"no output from {cmd}{context}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = {k: v for k, v in result.items() if k not in ("requests", "expected", "text")}
    assert proc.returncode == 0 and result["ok"], f"{result.get('error')}\n{summary}\n{result.get('text')}{context}"
    print(f"\nmlflow server up in {srv['start_s']} s; browser {browser_s:.1f} s; timings (ms) {result['timings']}")

    assert result["missing"] == [] and result["found"] == expected, summary
    # Each value in its run's column: run details and params are <tr>s, metrics a grid.
    rows = result["tableRows"]
    assert ["Run ID:", id1, id2] in rows, rows
    assert ["Run Name:", "unet-run", "zhang-run"] in rows, rows
    assert ["train.model", "unet", "zhang"] in rows, rows
    for metric in ("test_psnr", "val_loss", "val_psnr"):  # the latest step of each
        assert [metric, str(last["unet-run"][metric]), str(last["zhang-run"][metric])] in result["gridRows"], \
            result["gridRows"]
    # The chart (plotly's parallel coordinates: train.model against val_psnr) is drawn.
    assert result["charts"]["drawn"] and result["charts"]["parcoords"] >= 1, result["charts"]
    assert {"train.model", "val_psnr"} <= set(result["charts"]["text"]), result["charts"]

    # Nothing left the machine: every request went to the server, none elsewhere.
    assert result["external"] == [], result["external"]
    hosts = {urlsplit(u).hostname for u in result["requests"] if urlsplit(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts == {LOOPBACK}, hosts
    assert any("/ajax-api/2.0/mlflow/runs/search" in u for u in result["requests"]), result["requests"]
    # No script errors. The only failing request may be MLflow's own probe for an auth
    # plugin (404 without one; the team's server answers it), which chromium logs as a
    # console error.
    assert result["pageErrors"] == [], result["pageErrors"]
    assert all(r["status"] == 404 and r["url"].endswith("/ajax-api/2.0/mlflow/users/current")
               for r in result["badResponses"]), result["badResponses"]
    if srv["auth"]:
        assert result["badResponses"] == [], result["badResponses"]
    resource_errors = [e for e in result["consoleErrors"] if e.startswith("Failed to load resource")]
    assert len(resource_errors) <= len(result["badResponses"]), result["consoleErrors"]
    assert len(resource_errors) == len(result["consoleErrors"]), result["consoleErrors"]
