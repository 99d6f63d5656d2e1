"""The team stack's figures in docs/team.md, written to reports/team.json:

1. `dvc push` / `dvc pull` of the default pipeline's outputs (this checkout's committed
   dvc.lock, read from its DVC cache: run `make run` first) to and from SeaweedFS's S3,
   next to a directory remote, in the same run;
2. MLflow: logging one epoch's metrics and a sample grid, into SQLite and into the
   PostgreSQL-backed server (artifacts proxied to S3), alternately, as a ratio;
3. two clones training at once against the one server: runs and metric points counted.

The stack (colorize/team/services.py) is started on free loopback ports in a temporary
folder and stopped after.

    .venv/bin/python -m bench.team          # ~5 min on 2 cores

Not a test: it asserts nothing about the speeds; it does count what was logged.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from colorize.common.files import write_json  # noqa: E402
from colorize.team import services  # noqa: E402
from tests.conftest import TINY, bin_path, make_project, run  # noqa: E402 - the test project builder

DVC = bin_path("dvc")
EPOCHS = 20  # logged per store in the MLflow figure
TRAIN_EPOCHS = 4  # of each clone's concurrent training


def cache_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())


def add_remote(proj: Path, key: str, url: str, stack: services.Stack) -> None:
    """The remote in .dvc/config.local (this clone only), with the stack's endpoint for S3."""
    run([DVC, "remote", "add", "--local", key, url], proj)
    if url.startswith("s3://"):
        run([DVC, "remote", "modify", "--local", key, "endpointurl", stack.s3_url], proj)


def dvc_remotes(stack: services.Stack, tmp: Path) -> dict:
    """Push this checkout's outputs to each remote from a clone sharing its cache, then pull
    them into fresh clones."""
    env = {**os.environ, **stack.s3_env()}
    src = tmp / "src"
    run(["git", "clone", "-q", str(ROOT), str(src)], tmp)
    run([DVC, "cache", "dir", "--local", str(ROOT / ".dvc" / "cache")], src)
    remotes = {"s3 (SeaweedFS)": "s3://dvc/bench", "directory": str(tmp / "dir-remote")}
    out = {}
    for name, url in remotes.items():
        key = "s3" if url.startswith("s3://") else "dir"
        add_remote(src, key, url, stack)
        started = time.perf_counter()
        run([DVC, "push", "-r", key], src, env=env)
        push_s = time.perf_counter() - started
        dest = tmp / f"pull-{key}"
        run(["git", "clone", "-q", str(src), str(dest)], tmp)
        add_remote(dest, key, url, stack)
        started = time.perf_counter()
        run([DVC, "pull", "-r", key], dest, env=env)
        pull_s = time.perf_counter() - started
        size = cache_bytes(dest / ".dvc" / "cache")
        files = sum(1 for p in (dest / ".dvc" / "cache").rglob("*") if p.is_file())
        out[name] = {"bytes": size, "files": files, "push_s": round(push_s, 2), "pull_s": round(pull_s, 2),
                     "push_MB_s": round(size / push_s / 1e6, 1), "pull_MB_s": round(size / pull_s / 1e6, 1)}
        print(f"team: {name}: {size / 1e6:.1f} MB in {files} files, push {push_s:.1f} s, pull {pull_s:.1f} s",
              flush=True)
    return out


def mlflow_logging(stack: services.Stack, tmp: Path) -> dict:
    """One epoch as the engine logs it (four metrics and a grid image), EPOCHS times per
    store, the stores alternating so that both see the same machine."""
    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from PIL import Image

    grid = np.asarray(Image.open(ROOT / "reports" / "train_grid.png").convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    os.environ.update({"MLFLOW_TRACKING_USERNAME": services.MLFLOW_ADMIN,
                       "MLFLOW_TRACKING_PASSWORD": stack.secrets["mlflow_admin"], **stack.s3_env()})
    stores = {"sqlite": f"sqlite:///{tmp / 'mlflow.db'}", "server (PostgreSQL + S3)": stack.mlflow_url}
    clients = {name: MlflowClient(tracking_uri=uri) for name, uri in stores.items()}
    run_ids = {}
    for name, client in clients.items():
        exp = client.create_experiment("bench-logging", artifact_location=(tmp / "art").as_uri()
                                       if name == "sqlite" else None)
        run_ids[name] = client.create_run(exp).info.run_id
    times = {name: [] for name in stores}
    for epoch in range(EPOCHS):
        for name, client in clients.items():
            started = time.perf_counter()
            client.log_batch(run_ids[name], metrics=[
                mlflow.entities.Metric(k, float(epoch), int(time.time() * 1000), epoch)
                for k in ("train_loss", "val_loss", "val_psnr", "lr")])
            client.log_image(run_ids[name], grid, artifact_file=f"grids/epoch_{epoch:03d}.png")
            times[name].append(time.perf_counter() - started)
    out = {name: {"median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4), "max_s": round(max(t), 4)}
           for name, t in times.items()}
    out["server / sqlite"] = round(out["server (PostgreSQL + S3)"]["median_s"] / out["sqlite"]["median_s"], 2)
    print(f"team: MLflow epoch logging: {out}", flush=True)
    return out


def concurrent_training(stack: services.Stack, tmp: Path) -> dict:
    """Two clones train at the same time, both logging to the server; count what arrived."""
    from mlflow import MlflowClient

    env = {**stack.client_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    first = make_project(tmp / "clone-1", {**TINY, "train.epochs": TRAIN_EPOCHS})
    run([DVC, "repro", "priors"], first, env=env)
    second = tmp / "clone-2"
    shutil.copytree(first, second, symlinks=True)
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "colorize.stages.train"], cwd=p, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for p in (first, second)]
    codes = [p.wait(timeout=1800) for p in procs]
    wall = time.perf_counter() - started
    client = MlflowClient(tracking_uri=stack.mlflow_url)
    exp = client.get_experiment_by_name("colorize")
    # the training runs (the data stages of the first clone's `dvc repro priors` log runs too)
    runs = [r for r in client.search_runs([exp.experiment_id]) if "train.model" in r.data.params]
    points = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "val_psnr")) for r in runs}
    out = {"exit_codes": codes, "wall_s": round(wall, 1), "training_runs": len(runs), "epochs_each": TRAIN_EPOCHS,
           "val_psnr_points_per_run": sorted(points.values()),
           "lost": (2 - len(runs)) + sum(TRAIN_EPOCHS - n for n in points.values())}
    print(f"team: two clones at once: {out}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "team.json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="colorize-bench-team-"))
    root.chmod(0o755)  # PostgreSQL runs as `postgres` under root
    stack = services.Stack.load_or_create(root / "stack", {n: services.free_port() for n in services.DEFAULT_PORTS})
    try:
        stack.start()
        tmp = root / "work"
        tmp.mkdir()
        result = {"dvc_remotes": dvc_remotes(stack, tmp), "mlflow_epoch_logging": mlflow_logging(stack, tmp),
                  "two_clones_training": concurrent_training(stack, tmp),
                  "note": "bench/team.py on this machine (2 cores); the stack on loopback"}
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    write_json(args.out, result)
    print(f"team: wrote {args.out}")


if __name__ == "__main__":
    main()
