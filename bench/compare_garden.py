"""The five models on the bundled garden, one training budget each: the comparison table
in docs/models.md, written to reports/compare_garden.json.

In a temporary copy of this project (a fresh git+DVC repo, `tests.conftest.make_project`)
it reproduces the default (the U-Net) and commits it, queues the four other models and
the U-Net with hard examples (`dvc exp run --queue -S ...`), runs the queue with one
worker (`dvc queue start -j 1`: the cores are the limit, and each run's seconds per
epoch must be its own), then reads every run's test metrics and training numbers from
`dvc exp show --json`.

    .venv/bin/python -m bench.compare_garden                # tens of minutes on 2 cores
    .venv/bin/python -m bench.compare_garden --tiny --out /tmp/cmp.json   # ~9 min: checks the script

Not a test: it asserts nothing about the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from colorize.common.files import write_json  # noqa: E402
from tests.conftest import TINY, bin_path, make_project, run  # noqa: E402 - the test project builder

DVC = bin_path("dvc")
# name -> the `-S` overrides of its experiment; the default U-Net is the committed baseline
EXPERIMENTS = {
    "cmp-zhang": ["train.model=zhang"],
    "cmp-resnet": ["train.model=resnet"],
    "cmp-gan": ["train.model=gan"],
    "cmp-cnn": ["train.model=cnn"],
    "hard-examples": ["train.hard_examples=1.0"],
}
BASELINE = "unet (default)"
QUEUE_TIMEOUT = 6 * 3600  # seconds: generous; the queue's slowest run (gan) trains ~4 min on 2 cores


def run_queue(project: Path) -> None:
    """Queue every experiment, run them one at a time, and wait until none is left."""
    for name, overrides in EXPERIMENTS.items():
        sets = [arg for o in overrides for arg in ("-S", o)]
        run([DVC, "exp", "run", "--queue", "-n", name, *sets], project)
    # Not through run(): the worker it starts keeps any captured pipe open until the queue
    # is empty, and stage commands call the venv's `python`.
    venv_path = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run([DVC, "queue", "start", "-j", "1"], cwd=project, env=venv_path, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + QUEUE_TIMEOUT
    while time.time() < deadline:
        status = run([DVC, "queue", "status"], project).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(10)
    else:
        sys.exit(f"compare_garden: the queue did not finish in {QUEUE_TIMEOUT} s:\n{status}")
    if "Failed" in status:
        failed = [name for name in EXPERIMENTS if re.search(rf"\b{re.escape(name)}\b.*Failed", status)]
        logs = "".join(run([DVC, "queue", "logs", n], project, check=False).stdout[-3000:] for n in failed)
        sys.exit(f"compare_garden: experiments failed:\n{status}\n{logs}")


def metrics_of(row: dict) -> dict:
    """reports/metrics.json and reports/train.json of one row of `dvc exp show --json`."""
    files = row["data"]["metrics"]
    return {"metrics": files["reports/metrics.json"]["data"], "train": files["reports/train.json"]["data"]}


def collect(project: Path) -> dict:
    """Every run's numbers: the committed baseline and each experiment derived from it."""
    shown = json.loads(run([DVC, "exp", "show", "--json"], project).stdout)
    head = next(r for r in shown if r["rev"] != "workspace")
    runs = {BASELINE: metrics_of(head)}
    for branch in head.get("experiments") or []:
        for exp in branch["revs"]:
            if exp.get("name") in EXPERIMENTS:
                runs[exp["name"]] = metrics_of(exp)
    missing = set(EXPERIMENTS) - set(runs)
    if missing:
        sys.exit(f"compare_garden: no results for {sorted(missing)} in `dvc exp show --json`")
    return runs


def summary(runs: dict) -> list[dict]:
    """The table's columns, one row per run, best PSNR first."""
    rows = [{"run": name, "model": r["train"]["model"], "n_params": r["train"]["n_params"],
             "seconds_per_epoch": round(r["train"]["seconds_per_epoch"], 2),
             "psnr": round(r["metrics"]["psnr"], 2), "best_baseline": r["metrics"]["best_baseline"],
             "psnr_best_baseline": round(r["metrics"]["psnr_best_baseline"], 2),
             "colourfulness": round(r["metrics"]["colourfulness"], 1),
             "colourfulness_truth": round(r["metrics"]["colourfulness_truth"], 1)}
            for name, r in runs.items()]
    return sorted(rows, key=lambda row: -row["psnr"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a 120-image garden at 32 px, 2 epochs: checks the script")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "compare_garden.json")
    args = ap.parse_args(argv)
    overrides = {**TINY, "train.gan.pretrain_epochs": 1} if args.tiny else {}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="compare_garden-") as tmp:
        project = make_project(Path(tmp) / "garden", overrides)
        run([DVC, "repro"], project, timeout=3600)
        run(["git", "add", "-A"], project)
        run(["git", "commit", "-qm", "baseline: the default U-Net"], project)
        run_queue(project)
        runs = collect(project)
    commands = {BASELINE: "dvc repro"} | {
        name: "dvc exp run " + " ".join(f"-S {o}" for o in overrides_) for name, overrides_ in EXPERIMENTS.items()}
    write_json(args.out, {
        "note": ("bench/compare_garden.py: " + ("TINY config" if args.tiny else "garden default params")
                 + "; the queue ran one experiment at a time (dvc queue start -j 1)"),
        "overrides": overrides, "commands": commands, "wall_seconds": round(time.time() - started),
        "table": summary(runs), "runs": runs,
    })
    for row in summary(runs):
        print(f"{row['run']:16} psnr {row['psnr']:6.2f}  best baseline {row['psnr_best_baseline']:6.2f}  "
              f"colourfulness {row['colourfulness']:5.1f}  {row['seconds_per_epoch']:6.2f} s/epoch")
    print(f"compare_garden: wrote {args.out}")


if __name__ == "__main__":
    main()
