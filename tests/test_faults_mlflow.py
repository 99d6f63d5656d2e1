"""Faults around MLflow, training resume, checkpoints and params, for real: a real
`mlflow server` stopped under a training, a real SIGKILL, a real full tmpfs, a real
corrupt mlflow.db, real tampered checkpoints through the colorize CLI, real `dvc repro`.

After each fault: one line (no traceback), the rerun completes, nothing done is lost
(completed epochs, MLflow runs, decisions.csv), and `dvc status` is clean where DVC
runs the stages. (Part of issue 13's fault suite; merged into tests/test_faults.py.)
"""
from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import train
from tests.conftest import IN_CI, ROOT, TINY, bin_path, make_project, run
from tests.test_colorize import _params, save_like_train
from tests.test_mlflow_ui import LOOPBACK, _family, _free_port, _health, _stop
from tests.test_train_engine import copy_of, kill_at_first_checkpoint, prepared  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow

EPOCHS = 4  # tiny_params' train.epochs
QUICK = 30  # s: an unusable store must be reported within this


# ----------------------------------------------------------------------------- helpers

def train_in(proj: Path, env: dict | None = None, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`python -m pipeline.train` in `proj`, as DVC runs it."""
    full = {**os.environ, "PYTHONPATH": str(proj), **(env or {})}
    for name in unset:
        full.pop(name, None)
    return subprocess.run([sys.executable, "-m", "pipeline.train"], cwd=proj, env=full, capture_output=True,
                          text=True, timeout=900)


def the_error_line(proc: subprocess.CompletedProcess) -> str:
    """The failure, as one `error:` line and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@contextlib.contextmanager
def training(proj: Path, env: dict):
    """A `python -m pipeline.train` running in `proj`; killed on exit if still there."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.train"], cwd=proj,
                            env={**os.environ, "PYTHONPATH": str(proj), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def pause_at_first_checkpoint(proc: subprocess.Popen, ckpt: Path) -> int:
    """SIGSTOP the training as soon as its first checkpoint appears; that epoch."""
    deadline = time.monotonic() + 600
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
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
    return torch.load(proj / train.MODEL_PATH, weights_only=True)["model"]


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
    done = train_in(proj, unset=("MLFLOW_TRACKING_URI",))
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
            self.family = _family(self.proc) or self.family
            assert self.proc.poll() is None, (self.store / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (self.store / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        self.family = _family(self.proc)

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


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size: str):
    """A real tmpfs of `size` at `mountpoint` (root only), unmounted on exit."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        message = f"cannot mount a tmpfs for a disk-full test ({out.stderr.strip()}); needs root"
        if IN_CI:
            pytest.fail(message + " (CI=true: fault tests must not skip)")
        pytest.skip(message)
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=True)


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


# ----------------------------------------------------------------------------- MLflow server

def test_mlflow_server_down_at_start_and_dying_mid_training(prepared, straight, tmp_path):  # noqa: F811
    """Bug 3. A real server stops under a running training: the training fails in
    seconds with one line, its checkpoint whole. Rerun while the server is down: one line
    within 30 s, before any work. Server back: the rerun resumes the same run to the
    same weights, every epoch logged once."""
    proj = copy_of(prepared, tmp_path, "proj")
    port, store = _free_port(), tmp_path / "server"
    env = {"MLFLOW_TRACKING_URI": f"http://{LOOPBACK}:{port}"}
    ckpt = proj / train.RESUME_PATH
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
    down = train_in(proj, env)
    took = time.monotonic() - started
    assert the_error_line(down) == (f"error: MLflow server {url} is unreachable (connection refused): "
                                    "start it or unset MLFLOW_TRACKING_URI")
    assert took < QUICK, f"{took:.0f} s"
    assert torch.load(ckpt, weights_only=True)["epoch"] == epoch  # untouched

    with mlflow_server(store, port):  # back, on the same store
        again = train_in(proj, env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"resuming from {train.RESUME_PATH} after epoch {epoch}" in again.stdout
        run_id = json.loads((proj / train.REPORT).read_text())["mlflow_run_id"]
        assert epochs_logged(url, run_id) == list(range(1, EPOCHS + 1))  # each epoch once, none lost
        assert epochs_logged(url, run_id, "val_psnr") == list(range(1, EPOCHS + 1))
    assert same_weights(weights_of(proj), straight)


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


def test_mlflow_server_refusing_credentials_is_one_line(prepared, tmp_path, monkeypatch):  # noqa: F811
    from pipeline import tracking

    server = ThreadingHTTPServer((LOOPBACK, 0), _AuthServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://{LOOPBACK}:{server.server_address[1]}"
    try:
        proj = copy_of(prepared, tmp_path, "proj")
        started = time.monotonic()
        refused = train_in(proj, {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "alice",
                                  "MLFLOW_TRACKING_PASSWORD": "wrong"})
        line = the_error_line(refused)
        assert line.startswith(f"error: MLflow server {url} refused the credentials (HTTP 401)"), line
        assert "MLFLOW_TRACKING_USERNAME" in line and "MLFLOW_TRACKING_PASSWORD" in line
        assert time.monotonic() - started < QUICK
        assert not (proj / train.RESUME_PATH).exists()
        # the right password passes the check
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", _AuthServer.PASSWORD)
        tracking.check_store()
    finally:
        server.shutdown()


# ----------------------------------------------------------------------------- the store

def test_mlflow_run_gone_while_a_checkpoint_waits(prepared, straight, tmp_path):  # noqa: F811
    """Bug 4. Killed mid-training, then mlflow.db moved away: the rerun resumes the
    weights in a new run tagged with the old id, says so in one line, and the new run
    has every epoch's metrics; the old store keeps the old run."""
    proj = copy_of(prepared, tmp_path, "proj")
    default_store = {"unset": ("MLFLOW_TRACKING_URI",)}  # the project's own mlflow.db
    epoch = kill_at_first_checkpoint(proj, env={"MLFLOW_TRACKING_URI": sqlite_uri(proj / "mlflow.db")})
    old_run = torch.load(proj / train.RESUME_PATH, weights_only=True)["mlflow_run_id"]
    away = tmp_path / "moved-away.db"
    shutil.move(proj / "mlflow.db", away)

    again = train_in(proj, **default_store)
    assert again.returncode == 0, again.stderr[-3000:]
    said = [ln for ln in again.stdout.splitlines() if old_run in ln]
    assert len(said) == 1 and "is not in the store" in said[0] and f"after epoch {epoch}" in said[0], again.stdout
    new_run = json.loads((proj / train.REPORT).read_text())["mlflow_run_id"]
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
    assert not (proj / train.RESUME_PATH).exists()


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
        broken = train_in(proj, unset=("MLFLOW_TRACKING_URI",))
        line = the_error_line(broken)
        assert line.startswith(f"error: MLflow store {db.resolve()} ") and f"mv {db.resolve()} " in line, line
        assert time.monotonic() - started < QUICK
        assert not (proj / train.RESUME_PATH).exists()  # no work done
    shutil.move(db, proj / "mlflow.db.broken")  # the advice
    again = train_in(proj, unset=("MLFLOW_TRACKING_URI",))
    assert again.returncode == 0, again.stderr[-3000:]
    assert (proj / train.MODEL_PATH).exists()


# ----------------------------------------------------------------------------- disk full

def test_disk_full_in_curates_mlflow_logging(prepared, tmp_path):  # noqa: F811
    """The MLflow store and artifacts on a full tmpfs: curate ends with one line, and
    once space is freed the rerun completes and logs; decisions.csv is untouched."""
    from mlflow import MlflowClient

    proj = copy_of(prepared, tmp_path, "proj")
    # As in the pipeline, relevance scores before curate, and a review dataset made with
    # them: curate cannot yet rerun over a dataset made without scores (it asks that
    # dataset for its 'relevance' field; reported separately).
    scored = subprocess.run([sys.executable, "-m", "pipeline.relevance"], cwd=proj, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(proj)}, timeout=600)
    assert scored.returncode == 0, scored.stderr[-3000:]
    shutil.rmtree(proj / ".fiftyone")
    decisions = (proj / "data" / "curation" / "decisions.csv").read_bytes()
    with tmpfs(tmp_path / "disk", "4m") as disk:
        uri = sqlite_uri(disk / "mlflow.db")
        MlflowClient(uri).create_experiment("colorize", artifact_location=(disk / "mlartifacts").as_uri())
        filler = fill(disk)
        env = {**os.environ, "PYTHONPATH": str(proj), "MLFLOW_TRACKING_URI": uri}
        full = subprocess.run([sys.executable, "-m", "pipeline.curate"], cwd=proj, env=env, capture_output=True,
                              text=True, timeout=600)
        assert the_error_line(full).startswith("error: disk full "), full.stderr[-2000:]
        filler.unlink()
        again = subprocess.run([sys.executable, "-m", "pipeline.curate"], cwd=proj, env=env, capture_output=True,
                               text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("colorize").experiment_id],
                                             filter_string="tags.stage = 'curate' and attributes.status = 'FINISHED'")
        assert len(runs) == 1 and "kept" in runs[0].data.metrics
    assert (proj / "data" / "curation" / "decisions.csv").read_bytes() == decisions


def test_disk_full_while_writing_a_checkpoint(prepared, straight, tmp_path):  # noqa: F811
    """models/checkpoints fills up during training: one line, the previous last.pt whole
    (atomic write, no temporary left), and once space is freed the rerun resumes from
    the last complete epoch to the uninterrupted run's weights, each epoch logged once."""
    proj = copy_of(prepared, tmp_path, "proj")
    ckpt = proj / train.RESUME_PATH
    store = {"MLFLOW_TRACKING_URI": sqlite_uri(proj / "mlflow.db")}
    with tmpfs(ckpt.parent, "16m"), training(proj, store) as proc:
        epoch = pause_at_first_checkpoint(proc, ckpt)  # the disk fills while it trains the next epoch
        filler = fill(ckpt.parent, leave=ckpt.stat().st_size // 2)  # room for half a checkpoint
        line = the_error_line(resume_until_exit(proc, timeout=300))
        assert line.startswith(f"error: disk full writing {train.RESUME_PATH} ("), line
        assert torch.load(ckpt, weights_only=True)["epoch"] == epoch  # the previous one, whole
        assert sorted(p.name for p in ckpt.parent.iterdir()) == ["filler", ckpt.name]  # no partial file left
        filler.unlink()  # space freed
        again = train_in(proj, store)
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"resuming from {train.RESUME_PATH} after epoch {epoch}" in again.stdout
    assert same_weights(weights_of(proj), straight)
    run_id = json.loads((proj / train.REPORT).read_text())["mlflow_run_id"]
    assert epochs_logged(store["MLFLOW_TRACKING_URI"], run_id) == list(range(1, EPOCHS + 1))


# ----------------------------------------------------------------------------- checkpoints

def _bomb(levels: int = 40) -> list:
    """Nested lists sharing their items: a few hundred KB pickled, 3**40 items unrolled."""
    bomb: list = ["lol"]
    for _ in range(levels):
        bomb = [bomb, bomb, bomb]
    return bomb


def cli_measured(tmp_path: Path, *args) -> tuple[subprocess.CompletedProcess, float, float]:
    """The colorize CLI in a child process: (result, seconds, the child's peak RSS in MB)."""
    cmd = [sys.executable, "-m", "pipeline.colorize", *map(str, args)]
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
    from PIL import Image

    path = save_like_train(tmp_path / "model.pt", _params())
    ckpt = torch.load(path, weights_only=True)
    if attack == "huge model":
        ckpt["args"]["train"].update(width=1024, depth=6, crop=0)
        ckpt["args"]["ingest"]["image_size"] = 64
    elif attack == "billion laughs in a number":
        ckpt["args"]["train"]["width"] = _bomb()
    else:
        ckpt["args"]["evaluate"]["temperatures"] = [0.5, _bomb()]
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


# ----------------------------------------------------------------------------- params

@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    """A real git+DVC project, the whole tiny pipeline reproduced once."""
    proj = make_project(tmp_path_factory.mktemp("faults-dvc") / "proj", TINY)
    run([bin_path("dvc"), "repro"], proj)
    return proj


def dvc_is_clean(proj: Path) -> bool:
    return "up to date" in run([bin_path("dvc"), "status"], proj).stdout


def test_unknown_top_level_param_fails_dvc_repro(dvc_project):
    """Item 7: a key no stage tracks is validated too, by the `params` stage; fixed, the
    pipeline is up to date again without rerunning anything else."""
    proj = dvc_project
    good = (proj / "params.yaml").read_text()
    params = yaml.safe_load(good)
    params["trian"] = {"epochs": 5}  # meant train.epochs
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = run([bin_path("dvc"), "repro"], proj, check=False)
    finally:
        (proj / "params.yaml").write_text(good)  # the project is shared with the next test
    assert out.returncode != 0
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("error:")]
    assert lines == ["error: trian: unknown key (did you mean 'train'?)"], out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    again = run([bin_path("dvc"), "repro"], proj)
    assert "Running stage" not in again.stdout, again.stdout
    assert dvc_is_clean(proj)


def test_mlflow_unreachable_dvc_repro_train_is_one_line(dvc_project):
    """Bug 3 as reported: `MLFLOW_TRACKING_URI=http://127.0.0.1:<nothing> dvc repro -f -s
    train` is one line within 30 s; the next plain `dvc repro` completes and is clean."""
    proj = dvc_project
    url = f"http://{LOOPBACK}:{_free_port()}"
    started = time.monotonic()
    out = run([bin_path("dvc"), "repro", "-f", "-s", "train"], proj, check=False, env={"MLFLOW_TRACKING_URI": url})
    took = time.monotonic() - started
    assert out.returncode != 0
    assert "Traceback" not in out.stdout + out.stderr
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("error:")]
    assert lines == [f"error: MLflow server {url} is unreachable (connection refused): start it or unset "
                     "MLFLOW_TRACKING_URI"], out.stdout + out.stderr
    assert took < QUICK, f"{took:.0f} s"
    assert not (proj / train.RESUME_PATH).exists()  # no epoch was run
    run([bin_path("dvc"), "repro"], proj)
    assert (proj / train.MODEL_PATH).exists()
    assert dvc_is_clean(proj)
