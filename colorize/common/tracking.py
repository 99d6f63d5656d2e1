"""MLflow set-up shared by every stage that logs.

- The store: `MLFLOW_TRACKING_URI` if set, else a SQLite file `mlflow.db` at the
  project root, as an absolute URI, with artifacts in `mlartifacts/` beside it. Queued `dvc exp run --queue` experiments execute in
  a temporary copy under `.dvc/tmp/exps/`, where a relative URI would silently create a
  second, throw-away store; so the root is found by walking out of that copy.
- Telemetry is off.
- Runs are tagged with the git commit and, when DVC runs them as experiments, the
  experiment name and baseline rev, and with the command that reproduces them.
- Lineage: a run logs the data it read (`log_data`) as an MLflow dataset input whose
  digest is DVC's hash of it (what dvc.lock records) and whose source names the DVC
  path and git revision: the same data shows the same digest in every run.
- Every stage that logs calls `check_store()` before any work: a tracking server that
  does not answer, refuses the credentials, or a corrupt mlflow.db, is a one-line error
  in seconds, never a silent switch to another store.
- MLflow's HTTP client retries 7 times with exponential back-off and waits 120 s per
  request by default: a server that dies mid-run hung training for minutes. Bounded
  here (HTTP_DEFAULTS; any value the user sets wins), so it fails in seconds.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from colorize.common.errors import UserError, causes, one_line

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

# The names are those of mlflow/environment_variables.py (MLflow 3.17). Two retries with
# a back-off factor of 1: about 3 s to give up on a refused connection; 20 s for an
# answer, enough for a model upload to a local server, short of a hang.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
for _name, _value in HTTP_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

EXPERIMENT = "colorize"
CHECK_TIMEOUT = 5  # s for the start-up check's one request: a live server answers in milliseconds


def project_root(start: Path | None = None) -> Path:
    """The real project root, also from inside a DVC experiment's temporary copy."""
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def check_store() -> None:
    """Fail now, in one line, if the store cannot be used: an http(s) server that does
    not answer or refuses the credentials, or a SQLite file that is not a sound database."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif uri.startswith("sqlite:///"):
        _check_sqlite(Path(uri.removeprefix("sqlite:///").split("?")[0]))


def _check_server(uri: str) -> None:
    """One request, no retries: an API call (not /health), so that a server that wants
    credentials says so."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    fix = "start it or unset MLFLOW_TRACKING_URI"
    try:
        response = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/get-by-name", "GET",
                                max_retries=0, timeout=CHECK_TIMEOUT, raise_on_status=False,
                                params={"experiment_name": EXPERIMENT})
    except MlflowException as e:
        raise UserError(f"MLflow server {uri} is unreachable ({_why_unreachable(e)}): {fix}") from None
    if response.status_code in (401, 403):
        raise UserError(f"MLflow server {uri} refused the credentials (HTTP {response.status_code}): set "
                        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
                        "to an account of that server")
    if response.status_code not in (200, 404):  # 404: no experiment of that name yet
        raise UserError(f"MLflow server {uri} answered HTTP {response.status_code} to an API request: is it an "
                        f"MLflow tracking server, and healthy? ({fix})")


def _why_unreachable(e: BaseException) -> str:
    """The root cause in a few words: connection refused, timed out, name not resolved..."""
    chain = list(causes(e))
    if any(isinstance(c, ConnectionRefusedError) for c in chain):
        return "connection refused"
    if any("timeout" in type(c).__name__.lower() for c in chain):
        return f"no answer in {CHECK_TIMEOUT} s"
    return one_line(str(chain[-1]) or type(chain[-1]).__name__, 160)


def _check_sqlite(db: Path) -> None:
    """A store that does not exist yet is fine (MLflow creates it); one that exists must
    be a SQLite database that passes SQLite's own quick check (milliseconds for a
    store of a few thousand runs)."""
    import sqlite3
    from contextlib import closing

    if not db.exists():
        return
    fix = (f"move it aside (mv {db} {db}.broken) to start a new store, or restore it from a backup; "
           "the artifacts beside it are kept")
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
            result = con.execute("PRAGMA quick_check(1)").fetchone()[0]
    except sqlite3.DatabaseError as e:  # "file is not a database", "disk image is malformed"
        if "locked" in str(e):
            return  # another stage is writing: busy, not broken
        raise UserError(f"MLflow store {db} is not a sound SQLite database ({one_line(str(e), 120)}): {fix}") from None
    if result != "ok":
        raise UserError(f"MLflow store {db} is corrupt (sqlite quick_check: {one_line(result, 120)}): {fix}")


def run_exists(run_id: str) -> bool:
    """Whether the current store has the run (and it is not deleted)."""
    import mlflow

    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return run.info.lifecycle_stage != "deleted"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def run_tags(extra: dict | None = None) -> dict:
    tags = {"git_commit": git_commit()}
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    # How to get this run's inputs and code back: the experiment if DVC ran one, else the commit.
    if tags.get("dvc_exp_name"):
        tags["reproduce"] = f"dvc exp apply {tags['dvc_exp_name']} && dvc repro"
    elif tags["git_commit"]:
        tags["reproduce"] = f"git checkout {tags['git_commit']} && dvc pull && dvc repro"
    tags.update(extra or {})
    return tags


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dvc_hash(path: str | os.PathLike) -> str:
    """DVC's hash of an output, as dvc.lock records it (DVC 3): the md5 of a file's bytes;
    for a directory, the md5 of the JSON list of its files' {md5, relpath} sorted by
    relpath, then ".dir" (dvc_data's Tree.digest). Computed from the files, so it says
    what this run read, even where dvc.lock is stale or DVC holds its lock."""
    path = Path(path)
    if path.is_file():
        return _md5(path)
    if not path.is_dir():
        raise UserError(f"{path} not found: nothing to hash (run the stage that makes it: dvc repro)")
    files = sorted((f.relative_to(path).as_posix(), f) for f in path.rglob("*") if f.is_file())
    listing = [{"md5": _md5(f), "relpath": rel} for rel, f in files]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"


def _dvc_source():
    """An MLflow dataset source naming a DVC-tracked path at a git revision (defined on
    first use: importing mlflow costs seconds)."""
    from mlflow.data.dataset_source import DatasetSource

    class DvcDatasetSource(DatasetSource):
        def __init__(self, path: str, rev: str):
            self.path, self.rev = path, rev

        @staticmethod
        def _get_source_type() -> str:
            return "dvc"

        def load(self, dst_path=None) -> str:
            """Fetch the data at that revision (`dvc get`); returns where it went."""
            dst = str(dst_path or Path(self.path).name)
            subprocess.run(["dvc", "get", str(project_root()), self.path, "--rev", self.rev, "-o", dst], check=True)
            return dst

        @staticmethod
        def _can_resolve(raw_source) -> bool:
            return False  # made explicitly, never guessed from a string

        @classmethod
        def _resolve(cls, raw_source):
            raise NotImplementedError

        def to_dict(self) -> dict:
            return {"path": self.path, "rev": self.rev}

        @classmethod
        def from_dict(cls, source_dict: dict):
            return cls(source_dict["path"], source_dict["rev"])

    return DvcDatasetSource


def log_data(mlflow, path: str | os.PathLike, context: str) -> str:
    """Log `path` (relative to the project) as an input of the active run, with DVC's hash
    as its digest; returns the digest."""
    from mlflow.data.meta_dataset import MetaDataset

    digest = dvc_hash(path)
    rel = Path(path).as_posix()
    source = _dvc_source()(rel, git_commit() or "workspace")
    mlflow.log_input(MetaDataset(source, name=rel, digest=digest), context=context)
    return digest


def setup():
    """Point MLflow at the store and experiment; returns the mlflow module."""
    import logging

    import mlflow

    # Alembic prints every migration step at INFO the first time a store is created.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # MLflow logs each SQLAlchemy OperationalError with its traceback, then raises it: the
    # raise is what counts (errors.run_main makes a full disk one line), the log a duplicate.
    logging.getLogger("mlflow.store.db.utils").addFilter(lambda record: record.exc_info is None)
    user_uri = "MLFLOW_TRACKING_URI" in os.environ  # read first: set_tracking_uri sets it
    mlflow.set_tracking_uri(tracking_uri())
    if not user_uri and mlflow.get_experiment_by_name(EXPERIMENT) is None:
        # Artifacts beside the store, by absolute path: MLflow's default (./mlruns of the
        # current directory) would be lost inside a queued experiment's temp copy.
        try:
            mlflow.create_experiment(EXPERIMENT, artifact_location=(project_root() / "mlartifacts").as_uri())
        except mlflow.exceptions.MlflowException:
            pass  # created meanwhile by a parallel run
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def flat_params(section: str, values: dict) -> dict:
    """{"zhang": {"temperature": 0.38}} under "train" -> {"train.zhang.temperature": 0.38}:
    MLflow params are flat, and nested sections should stay comparable key by key."""
    out = {}
    for k, v in values.items():
        key = f"{section}.{k}"
        out.update(flat_params(key, v) if isinstance(v, dict) else {key: v})
    return out
