"""How every stage copes as the dataset grows (docs/scale.md).

For each N, builds a fresh git+DVC project whose garden has N images, runs every stage
as `dvc repro` would (params, download, ingest, relevance, curate, split, priors, one
epoch of train, evaluate, report), each in its own process: wall time, images/s, that
process's peak RSS and its peak anonymous memory (run_measured). Then `dvc commit`, and
the median of 5 `dvc status` and no-op `dvc repro` (of the stages up to `--until`).

    .venv/bin/python -m bench.scale [--size 64] 1000 10000 30000 > reports/scale.json
    .venv/bin/python -m bench.scale --until priors --set relevance.epochs=2 2000 6000   # a quick profile
    .venv/bin/python -m bench.scale --work /tmp/scale --until relevance 10000   # keep the project (bench.stepmem)

`--size` is ingest.image_size (train.crop follows at 7/8 of it). Not a test: it asserts
nothing and takes tens of minutes from 10,000 images on.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import bin_path, make_project  # noqa: E402 - reuse the test project builder

# Runs argv[2:], its stderr into argv[1]; prints seconds, peak RSS KB (wait4's exact
# high-water mark) and peak RssAnon KB (sampled every 10 ms). A fresh small process:
# Linux counts the RSS a child inherited at fork in its ru_maxrss, so the bench's own
# memory must not be the stage's parent.
MEASURE = """
import os, subprocess, sys, time
t = time.perf_counter()
with open(sys.argv[1], "wb") as err:
    proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=err)
anon = 0
while True:
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid:
        break
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    anon = max(anon, int(line.split()[1]))
    except OSError:
        pass
    time.sleep(0.01)
print(time.perf_counter() - t, usage.ru_maxrss, anon, os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, float]:
    """Run cmd; return (seconds, peak RSS MB, peak anonymous MB).

    Peak RSS counts the shard pages a stage has mapped, which are file cache the OS
    drops under pressure. Peak anonymous memory (RssAnon) is what the process itself
    holds: the figure that must stay flat as the dataset grows.
    """
    with tempfile.NamedTemporaryFile(suffix=".err") as err:  # a file, not a pipe: a chatty stage cannot block
        out = subprocess.run([sys.executable, "-c", MEASURE, err.name, *cmd], cwd=cwd, env=env, capture_output=True,
                             text=True, check=True)
        seconds, rss_kb, anon_kb, code = out.stdout.split()
        if int(code):
            raise SystemExit(f"bench: {' '.join(cmd)} failed: {Path(err.name).read_text(errors='replace').strip()[-2000:]}")
    return float(seconds), int(rss_kb) / 1024, int(anon_kb) / 1024


def timed(cmd, cwd, repeat=5) -> list[float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return times


STAGES = ("params", "download", "ingest", "relevance", "curate", "split", "priors", "train", "evaluate", "report")


def split_sizes(proj: Path) -> dict[str, int]:
    import pandas as pd

    manifest = proj / "data" / "split" / "manifest.parquet"
    return pd.read_parquet(manifest)["split"].value_counts().to_dict() if manifest.exists() else {}


def measure(n: int, size: int, work: Path, until: str = STAGES[-1], overrides: dict | None = None) -> dict:
    params = {"data.garden.n_images": n, "ingest.image_size": size, "train.crop": size * 7 // 8, "train.epochs": 1,
              "train.warmup_epochs": 0, **(overrides or {})}
    proj = make_project(work / f"n{n}-{size}", params)
    out: dict = {"n_images": n, "image_size": size, "overrides": overrides or {}}
    for stage in STAGES[: STAGES.index(until) + 1]:
        seconds, mb, anon = run_measured([sys.executable, "-m", f"colorize.stages.{stage}"], proj)
        # images the stage works through: every file up to curate, then the split it reads
        counted = {"train": split_sizes(proj).get("train"), "evaluate": split_sizes(proj).get("test")}.get(stage, n)
        out[stage] = {"seconds": round(seconds, 2), "images_per_s": round((counted or 0) / seconds, 1),
                      "peak_rss_mb": round(mb, 1), "peak_anon_mb": round(anon, 1)}
        print(f"scale: n={n} {stage}: {out[stage]}", file=sys.stderr, flush=True)
    # a partial pipeline: commit, status and repro the stages run, up to `until`
    targets = [] if until == STAGES[-1] else [until, "--with-deps"]
    committed = subprocess.run([bin_path("dvc"), "commit", "-f", "-q", *targets], cwd=proj, capture_output=True,
                               text=True)
    if committed.returncode:
        raise SystemExit(f"bench.scale: dvc commit failed: {committed.stderr.strip()[-2000:]}")
    status = timed([bin_path("dvc"), "status", *targets], proj)
    noop = timed([bin_path("dvc"), "repro", *targets[:1]], proj)
    out |= {
        "dvc_status_seconds_median": round(statistics.median(status), 3),
        "dvc_status_seconds_spread": [round(min(status), 3), round(max(status), 3)],
        "noop_repro_seconds_median": round(statistics.median(noop), 3),
        "noop_repro_seconds_spread": [round(min(noop), 3), round(max(noop), 3)],
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 10000], help="numbers of garden images")
    ap.add_argument("--size", type=int, default=64, help="ingest.image_size, px")
    ap.add_argument("--until", choices=STAGES, default=STAGES[-1], help="stop after this stage (a profile of the first ones)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params.yaml override, e.g. relevance.epochs=2 (YAML value); repeatable")
    ap.add_argument("--work", type=Path, metavar="DIR",
                    help="build the projects in DIR/n<N>-<size> and keep them (for bench.stepmem); "
                         "default: a temporary folder, removed")
    args = ap.parse_args()
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work.resolve() if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = []
        for n in args.sizes:
            results.append(measure(n, args.size, work, args.until, overrides))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
