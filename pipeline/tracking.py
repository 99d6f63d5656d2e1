"""MLflow set-up shared by every stage that logs.

- The store: `MLFLOW_TRACKING_URI` if set, else a SQLite file `mlflow.db` at the
  project root, as an absolute URI, with artifacts in `mlartifacts/` beside it. Queued `dvc exp run --queue` experiments execute in
  a temporary copy under `.dvc/tmp/exps/`, where a relative URI would silently create a
  second, throw-away store; so the root is found by walking out of that copy.
- Telemetry is off.
- Runs are tagged with the git commit and, when DVC runs them as experiments, the
  experiment name and baseline rev.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

EXPERIMENT = "colorize"


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
    tags.update(extra or {})
    return tags


def setup():
    """Point MLflow at the store and experiment; returns the mlflow module."""
    import logging

    import mlflow

    # Alembic prints every migration step at INFO the first time a store is created.
    logging.getLogger("alembic").setLevel(logging.WARNING)
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
