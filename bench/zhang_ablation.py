"""zhang with and without class rebalancing, and the annealed-mean temperature sweep of
each, on the bundled garden: the ablation table in docs/priors.md, written to
reports/zhang_ablation.json.

In a temporary copy of this project (a fresh git+DVC repo, `tests.conftest.make_project`)
it runs the two experiments one after the other in the workspace,

    dvc exp run -n zhang-rebalanced -S train.model=zhang
    dvc exp run -n zhang-plain -S train.model=zhang -S train.zhang.rebalance=false

and after each reads the test metrics (reports/metrics.json), the seconds per epoch
(reports/train.json) and the sweep over evaluate.temperatures
(reports/temperature_sweep.csv).

    .venv/bin/python -m bench.zhang_ablation                  # ~10 min on 2 cores
    .venv/bin/python -m bench.zhang_ablation --tiny --out /tmp/zhang.json   # ~3 min: checks the script

Not a test: it asserts nothing about the numbers.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from colorize.common.files import write_json  # noqa: E402
from tests.conftest import TINY, bin_path, make_project, run  # noqa: E402 - the test project builder

DVC = bin_path("dvc")
EXPERIMENTS = {
    "rebalanced": ["train.model=zhang"],
    "plain": ["train.model=zhang", "train.zhang.rebalance=false"],
}


def command(name: str) -> list[str]:
    return [DVC, "exp", "run", "-n", f"zhang-{name}", *(arg for o in EXPERIMENTS[name] for arg in ("-S", o))]


def read_run(project: Path) -> dict:
    """What the last experiment left in the workspace's reports."""
    reports = project / "reports"
    with open(reports / "temperature_sweep.csv", newline="") as f:
        sweep = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return {
        "metrics": json.loads((reports / "metrics.json").read_text()),
        "seconds_per_epoch": json.loads((reports / "train.json").read_text())["seconds_per_epoch"],
        "temperature_sweep": sweep,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a 120-image garden at 32 px, 2 epochs: checks the script")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "zhang_ablation.json")
    args = ap.parse_args(argv)
    overrides = TINY if args.tiny else {}
    started = time.time()
    results = {}
    with tempfile.TemporaryDirectory(prefix="zhang_ablation-") as tmp:
        project = make_project(Path(tmp) / "garden", overrides)
        for name in EXPERIMENTS:
            run(command(name), project, timeout=3600)
            results[name] = read_run(project)
    write_json(args.out, {
        "note": "bench/zhang_ablation.py: " + ("TINY config" if args.tiny else "garden default params"),
        "overrides": overrides,
        "commands": [" ".join(["dvc", *command(name)[1:]]) for name in EXPERIMENTS],
        "wall_seconds": round(time.time() - started),
        **results,
    })
    for name, r in results.items():
        by_t = "  ".join(f"T={row['temperature']:g}: {row['psnr']:.2f} dB, {row['colourfulness']:.1f}"
                         for row in r["temperature_sweep"])
        print(f"{name:10} {by_t}")
    print(f"zhang_ablation: wrote {args.out}")


if __name__ == "__main__":
    main()
