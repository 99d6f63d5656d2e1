"""How DVC and the data stages cope as the dataset grows (the real-data issue's scale check).

For each N, builds a fresh git+DVC project whose garden has N images, runs the download
and ingest stages through `dvc repro ingest`, then times `dvc status` and a no-op
`dvc repro ingest` (median of 5), and records the peak RSS of each stage's own process.

    .venv/bin/python bench/scale.py 1000 8000 30000 > reports/scale.json

Not a test: it asserts nothing and takes minutes at 30,000 images.
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


def peak_rss_mb(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float]:
    """Run cmd in a child of a fresh wrapper; return (seconds, the child's peak RSS in MB)."""
    wrapper = (
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL);"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=cwd, capture_output=True, text=True, check=True,
                         env=env)
    seconds, mb = out.stdout.split()
    return float(seconds), float(mb)


def timed(cmd, cwd, repeat=5) -> list[float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return times


def measure(n: int, work: Path) -> dict:
    proj = make_project(work / f"n{n}", {"data.garden.n_images": n})
    py = sys.executable
    dl_s, dl_mb = peak_rss_mb([py, "-m", "colorize.stages.download"], proj)
    in_s, in_mb = peak_rss_mb([py, "-m", "colorize.stages.ingest"], proj)
    subprocess.run([bin_path("dvc"), "commit", "-f", "-q", "download", "ingest"], cwd=proj, check=True, capture_output=True)
    status = timed([bin_path("dvc"), "status"], proj)
    noop = timed([bin_path("dvc"), "repro", "ingest"], proj)
    return {
        "n_images": n,
        "download_seconds": round(dl_s, 2),
        "download_peak_rss_mb": round(dl_mb, 1),
        "ingest_seconds": round(in_s, 2),
        "ingest_peak_rss_mb": round(in_mb, 1),
        "dvc_status_seconds_median": round(statistics.median(status), 3),
        "dvc_status_seconds_spread": [round(min(status), 3), round(max(status), 3)],
        "noop_repro_seconds_median": round(statistics.median(noop), 3),
        "noop_repro_seconds_spread": [round(min(noop), 3), round(max(noop), 3)],
    }


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 8000]
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for n in sizes:
            results.append(measure(n, Path(tmp)))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
