"""Peak anonymous memory of training's input path as the split grows (docs/scale.md).

For each n, a train split of n random images of `--size` px in shards, and a fresh
process that streams one epoch of batches from it exactly as training does
(`open_split` + `batch_stream`: read from the memory-mapped shards, Lab per batch,
random crop of 7/8 the side and flip), sampling its RssAnon. The same probe as
tests/test_train_engine.py::test_stream_memory_does_not_grow_with_the_split, at sizes
a test cannot afford. The model's own memory does not depend on n.

    .venv/bin/python -m bench.stream_memory --size 128 3000 30000
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.test_train_engine import PEAK_ANON, _working_store  # noqa: E402


def main() -> None:
    args = sys.argv[1:]
    size = 128
    if args[:1] == ["--size"]:
        size, args = int(args[1]), args[2:]
    sizes = [int(a) for a in args] or [3000, 30000]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            store = _working_store(Path(tmp) / f"n{n}", n, size, shard_size=1024)
            t = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", PEAK_ANON, *map(str, store), "stream", str(size * 7 // 8)], capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
            shard_mb = sum(f.stat().st_size for f in store[1].iterdir()) / 2**20
            results.append({"n_images": n, "image_size": size, "shards_mb": round(shard_mb),
                            "epoch_seconds": round(time.perf_counter() - t, 1),
                            "peak_anon_mb": round(float(done.stdout.split()[-1]), 1),
                            "lab_of_the_split_mb": round(n * size * size * 3 * 4 / 2**20)})
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
            for f in store[1].iterdir():  # free the disk before the next size
                f.unlink()
    print(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
