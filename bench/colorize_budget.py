"""Budgets of `python -m colorize.cli.colorize`: latency and peak memory at 1 MP and 24 MP.

    python bench/colorize_budget.py [--model models/model.pt] [--runs 3] [--workdir DIR]

Without --model it trains nothing: it builds the default model of params.yaml with random
init (seed 0) and saves it exactly as the training engine does (colorize/training/
engine.py, `state_of`: model, optimizer, scheduler, epoch, args, rng), so the numbers are those of the
default architecture, whatever its weights. Then it writes two photo-like JPEGs
(1224x816 = 1.0 MP and 6000x4000 = 24 MP) and, for each, runs the CLI in a fresh
subprocess `--runs` times, recording the wall time and the child's peak RSS (the
ru_maxrss of that child's rusage, from os.wait4: the counter RUSAGE_CHILDREN
accumulates, but per run). It also times one image in-process with the model already
loaded (decode + colorize + PNG write), which excludes Python/torch start-up (~1.5-2 s
of every CLI run). Prints one JSON object.

The parent process stays small (stdlib only; checkpoint, images and the in-process
timing are made in helper subprocesses): a child spawned with vfork/fork inherits the
parent's RSS high-water mark into its own ru_maxrss, so a big parent would inflate the
child's figure (it did: 1.39 GB reported for a 0.64 GB run, as /usr/bin/time -v shows).

Budgets (from the brief): 1 MP in <= 1 s of processing, 24 MP with <= ~2 GB peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {"1mp": (1224, 816), "24mp": (6000, 4000)}


def make_checkpoint(path: Path) -> Path:
    """Random-init default model, saved in the training engine's checkpoint format."""
    import torch

    from colorize.common.params import load_params
    from colorize.training import checkpoint
    from colorize.training.engine import state_of, warmup_cosine
    from colorize.training.models import build_model

    params = load_params(ROOT / "params.yaml")
    cfg = params["train"]
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg, load_weights=False)
    optimizers = model.configure_optimizers(cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizers["model"], warmup_cosine(cfg["warmup_epochs"], cfg["epochs"]))
    checkpoint.save(path, state_of(model, optimizers, sched, 0, params))
    return path


def make_photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A photo-like JPEG: smooth colour fields, edges and fine noise (compresses like a photo)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (12, 18, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    arr = np.asarray(coarse, dtype=np.int16)
    yy, xx = np.mgrid[0:height, 0:width]
    stripes = ((xx // 97 + yy // 61) % 2).astype(np.int16) * 24  # hard edges
    noise = rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
    arr = np.clip(arr + stripes[..., None] + noise, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, "JPEG", quality=90)
    return path


def run_cli(image: Path, outdir: Path, model: Path) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes, exit status) of one CLI run in a fresh process."""
    cmd = [sys.executable, "-m", "colorize.cli.colorize", str(image), "-o", str(outdir), "--model", str(model),
           "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode:
        raise SystemExit(f"colorize failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_maxrss * 1024, proc.returncode  # ru_maxrss is in KiB on Linux


def in_process_seconds(image: Path, outdir: Path, model_path: Path, runs: int) -> float:
    """Median seconds for one image with the model loaded: decode, colorize, write."""
    from colorize.cli import colorize as C

    import torch

    torch.set_num_threads(1)  # as the CLI (--threads 1)
    model, params = C.load_model(model_path)
    settings = C.Settings(model, params["ingest"]["image_size"], C.model_factor(params["train"]), overwrite=True)
    job = C.Job(image, Path(image.name), [outdir / "inproc.png"])
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        status, reason = C.colorize_file(job, settings)
        times.append(time.perf_counter() - t0)
        assert status == "written", reason
    return statistics.median(times)


def _helper(*args: str) -> str:
    """Run this file as a helper subprocess (big work stays out of the parent)."""
    proc = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"helper {args[0]} failed: {proc.stderr[-2000:]}")
    return proc.stdout.strip()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("--_"):  # helper modes
        mode, *rest = sys.argv[1:]
        if mode == "--_checkpoint":
            make_checkpoint(Path(rest[0]))
        elif mode == "--_photo":
            make_photo(Path(rest[0]), int(rest[1]), int(rest[2]))
        elif mode == "--_inprocess":
            print(in_process_seconds(Path(rest[0]), Path(rest[1]), Path(rest[2]), int(rest[3])))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: a random-init default model)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="colorize_budget_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.model:
        model = args.model.resolve()
    else:
        model = work / "random_default.pt"
        _helper("--_checkpoint", str(model))
    report: dict = {"model": str(model), "runs": args.runs, "cpu_count": os.cpu_count(),
                    "loadavg_start": round(os.getloadavg()[0], 2)}
    for name, (w, h) in SIZES.items():
        image = work / f"photo_{name}.jpg"
        _helper("--_photo", str(image), str(w), str(h))
        walls, rss = [], []
        for _ in range(args.runs):
            wall, peak, _ = run_cli(image, work / f"out_{name}", model)
            walls.append(wall)
            rss.append(peak)
        inproc = float(_helper("--_inprocess", str(image), str(work / f"out_{name}"), str(model), str(args.runs)))
        report[name] = {
            "pixels": w * h, "size": f"{w}x{h}", "jpeg_bytes": image.stat().st_size,
            "cli_wall_s_median": round(statistics.median(walls), 3), "cli_wall_s_all": [round(t, 3) for t in walls],
            "peak_rss_mb_max": round(max(rss) / 2**20, 1), "peak_rss_mb_all": [round(r / 2**20, 1) for r in rss],
            "in_process_s_median": round(inproc, 3),
        }
    report["parent_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["loadavg_end"] = round(os.getloadavg()[0], 2)
    report["budget_1mp_ok"] = report["1mp"]["in_process_s_median"] <= 1.0
    report["budget_24mp_rss_ok"] = report["24mp"]["peak_rss_mb_max"] <= 2048
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
