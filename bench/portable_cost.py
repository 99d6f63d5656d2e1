"""What the portable kernels cost: each stage that computes with floats, run pinned
(as `dvc repro` runs it: `python -m colorize.stages.X`, see colorize/common/portable.py)
and unpinned (its main() imported and called, so the CPU's own kernels run), on the
default params, in the same temporary project, one after the other. The figures in
docs/reproducibility.md.

    .venv/bin/python -m bench.portable_cost             # ~10 min on 2 cores
    .venv/bin/python -m bench.portable_cost --repeat 2  # best of two of each

Not a test: it asserts nothing about the numbers.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import make_project  # noqa: E402 - the test project builder

STAGES = ("relevance", "curate", "priors", "train", "evaluate")  # the float-heavy ones (download, ingest: bytes)
UNPINNED = "from colorize.common.errors import run_main\nfrom colorize.stages import {0} as m\nrun_main(m.main)"


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs of each; the best is kept")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="portable-cost-") as tmp:
        proj = make_project(Path(tmp) / "proj")
        env = {**os.environ, "PYTHONPATH": str(proj), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
               "MLFLOW_DISABLE_TELEMETRY": "true", "FIFTYONE_DATABASE_VALIDATION": "false"}
        for stage in ("download", "ingest"):
            subprocess.run([sys.executable, "-m", f"colorize.stages.{stage}"], cwd=proj, env=env, check=True,
                           capture_output=True)
        print("| stage | pinned (s) | unpinned (s) | pinned / unpinned |")
        print("| --- | --- | --- | --- |")
        for stage in ("relevance", "curate", "split", "priors", "train", "evaluate"):
            if stage not in STAGES:  # split: needed by priors, no floats to speak of
                subprocess.run([sys.executable, "-m", f"colorize.stages.{stage}"], cwd=proj, env=env, check=True,
                               capture_output=True)
                continue
            pinned = min(timed([sys.executable, "-m", f"colorize.stages.{stage}"], proj, env) for _ in range(args.repeat))
            unpinned = min(timed([sys.executable, "-c", UNPINNED.format(stage)], proj, env) for _ in range(args.repeat))
            print(f"| {stage} | {pinned:.1f} | {unpinned:.1f} | {pinned / unpinned:.2f} |", flush=True)


if __name__ == "__main__":
    main()
