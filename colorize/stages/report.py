"""Stage report: everything the pipeline measured, in one offline HTML file,
`reports/report.html` (colorize/evaluation/report.py), also attached to the
training's MLflow run.

    python -m colorize.stages.report [--reports reports] [--out FILE] [--no-mlflow]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from colorize.common import paths
from colorize.common.errors import run_main
from colorize.evaluation.report import log_to_training_run, write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the pipeline's offline HTML report.")
    parser.add_argument("--reports", default=str(paths.REPORTS), help="the stages' reports folder (default: reports)")
    parser.add_argument("--out", default=None, help="the HTML file (default: REPORTS/report.html)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not attach the report to the training's MLflow run")
    args = parser.parse_args(argv)
    out = write_report(args.reports, args.out)
    print(f"report: wrote {out} ({out.stat().st_size / 1e6:.2f} MB, self-contained, offline)")
    if not args.no_mlflow:
        log_to_training_run(Path(args.reports), out)


if __name__ == "__main__":
    run_main(main)
