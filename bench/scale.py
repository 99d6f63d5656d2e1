"""How every stage copes as the dataset grows (docs/scale.md).

For each N, builds a fresh git+DVC project whose garden has N images, runs every stage
as `dvc repro` would (params, download, ingest, relevance, curate, split, priors, one
epoch of train, evaluate, report), each in its own process: wall time, images/s, that process's
peak RSS and its peak anonymous memory (run_measured). Then `dvc commit`, and the median of 5 `dvc status` and no-op `dvc repro`.

    .venv/bin/python -m bench.scale [--size 64] 1000 10000 30000 > reports/scale.json

`--size` is ingest.image_size (train.crop follows at 7/8 of it). Not a test: it asserts
nothing and takes tens of minutes from 10,000 images on.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import bin_path, make_project  # noqa: E402 - reuse the test project builder


def run_measured(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, float]:
    """Run cmd; return (seconds, peak RSS MB, peak anonymous MB).

    Peak RSS is the kernel's exact high-water mark (wait4's ru_maxrss); it counts the
    shard pages a stage has mapped, which are file cache the OS drops under pressure.
    Peak anonymous memory (RssAnon, sampled every 10 ms) is what the process itself
    holds: the figure that must stay flat as the dataset grows.
    """
    t = time.perf_counter()
    errors = tempfile.TemporaryFile()  # a file, not a pipe: a chatty stage cannot block on it
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    anon_kb = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    anon_kb = max(anon_kb, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.01)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    errors.seek(0)
    err = errors.read().decode(errors="replace")
    if proc.returncode:
        raise SystemExit(f"bench.scale: {' '.join(cmd)} failed: {err.strip()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, anon_kb / 1024


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


def measure(n: int, size: int, work: Path) -> dict:
    proj = make_project(work / f"n{n}-{size}", {"data.garden.n_images": n, "ingest.image_size": size,
                                                "train.crop": size * 7 // 8, "train.epochs": 1,
                                                "train.warmup_epochs": 0})
    out: dict = {"n_images": n, "image_size": size}
    for stage in STAGES:
        seconds, mb, anon = run_measured([sys.executable, "-m", f"colorize.stages.{stage}"], proj)
        # images the stage works through: every file up to curate, then the split it reads
        counted = {"train": split_sizes(proj).get("train"), "evaluate": split_sizes(proj).get("test")}.get(stage, n)
        out[stage] = {"seconds": round(seconds, 2), "images_per_s": round((counted or 0) / seconds, 1),
                      "peak_rss_mb": round(mb, 1), "peak_anon_mb": round(anon, 1)}
        print(f"scale: n={n} {stage}: {out[stage]}", file=sys.stderr, flush=True)
    committed = subprocess.run([bin_path("dvc"), "commit", "-f", "-q"], cwd=proj, capture_output=True, text=True)
    if committed.returncode:
        raise SystemExit(f"bench.scale: dvc commit failed: {committed.stderr.strip()[-2000:]}")
    status = timed([bin_path("dvc"), "status"], proj)
    noop = timed([bin_path("dvc"), "repro"], proj)
    out |= {
        "dvc_status_seconds_median": round(statistics.median(status), 3),
        "dvc_status_seconds_spread": [round(min(status), 3), round(max(status), 3)],
        "noop_repro_seconds_median": round(statistics.median(noop), 3),
        "noop_repro_seconds_spread": [round(min(noop), 3), round(max(noop), 3)],
    }
    return out


def main() -> None:
    args = sys.argv[1:]
    size = 64
    if args[:1] == ["--size"]:
        size, args = int(args[1]), args[2:]
    sizes = [int(a) for a in args] or [1000, 10000]
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for n in sizes:
            results.append(measure(n, size, Path(tmp)))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
