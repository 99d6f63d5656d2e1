"""`make bench`: every stage's speed and memory, side by side with the seed-style way.

    python -m bench.suite                     # everything (about 17 min on 2 cores)
    python -m bench.suite --only ingest,lab   # some sections; the rest of bench.json is kept
    python -m bench.suite --smoke --out X --doc Y   # tiny sizes, one run (make test does this)

Writes `reports/bench.json` and the table between the `bench:begin`/`bench:end` markers
of docs/performance.md. Each figure is the median of several runs with its spread (min..max),
and, where a seed-style way exists, a ratio to it taken in the same run: the two are
timed alternately on the same inputs (bench/seed_style.py is that baseline: full JPEG
decode, per-image scikit-image float64 work inside a Dataset's `__getitem__`, every
epoch). Sections:

- ingest      decode + resize to the working size, img/s: real photos, large JPEGs
- lab         RGB -> Lab, img/s: colorize.common.colour (batched float32 torch) vs skimage
- curate      quality checks and the near-duplicate search, img/s
- priors      ab-bin counting on one core, pixels/s
- loader      training input pipeline, img/s delivered: colorize.training.loader + batches.next_batch
- train_step  img/s per model, real loader vs a batch already in memory (data-bound?)
- evaluate    predictions + four metrics, img/s
- colorize    1 MP latency, 24 MP wall time and peak memory (fresh processes)
- memory      peak RSS of the data stages at two dataset sizes (fresh projects)
- overhead    no-op `dvc repro`, and which stages rerun after a train.* change
- gpu         train steps with bfloat16 autocast + channels_last, when CUDA is present

Benchmarks are not tests: nothing here asserts a timing. `tests/test_bench.py` runs
`--smoke` so the code cannot rot.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import seed_style  # noqa: E402
from bench.colorize_budget import make_checkpoint, make_photo  # noqa: E402
from bench.scale import run_measured  # noqa: E402
from colorize.common.params import MODEL_NAMES, load_params  # noqa: E402

SHARED_FLOWERS = ROOT.parent / "shared" / "data" / "flowers-128"
SECTIONS = ("ingest", "lab", "curate", "priors", "loader", "train_step", "evaluate", "colorize", "memory",
            "overhead", "gpu")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Sizes:
    """How much work each section does. `full` is what `make bench` runs."""
    repeat: int  # runs per figure (median and spread over these)
    real_images: int  # real photos decoded by ingest (flowers-128, 128x128 JPEGs)
    large_images: int  # generated 2000x1500 JPEGs for the reduced-size decode path
    working_images: int  # 64x64 images for lab, curate, loader, train_step, evaluate
    priors_images: int  # 64x64 images counted by priors
    loader_files: int  # JPEGs behind the seed-style Dataset
    train_steps: int  # optimisation steps per timed run
    colorize_sizes: tuple  # ((name, width, height), ...)
    colorize_runs: int
    memory_sizes: tuple  # dataset sizes (garden images) for the memory section
    overhead_params: dict  # overrides of params.yaml for the overhead project
    large_size: tuple = (2000, 1500)


TINY_PROJECT = {"data.garden.n_images": 120, "ingest.image_size": 32, "curate.min_side": 24, "train.epochs": 2,
                "train.width": 8, "train.depth": 2, "train.crop": 24, "evaluate.grid_images": 4}
FULL = Sizes(repeat=5, real_images=400, large_images=8, working_images=512, priors_images=2000, loader_files=256,
             train_steps=10, colorize_sizes=(("1mp", 1224, 816), ("24mp", 6000, 4000)), colorize_runs=3,
             memory_sizes=(1000, 8000), overhead_params=TINY_PROJECT)
SMOKE = Sizes(repeat=1, real_images=6, large_images=1, working_images=24, priors_images=8, loader_files=8,
              train_steps=1, colorize_sizes=(("1mp", 320, 240), ("24mp", 640, 480)), colorize_runs=1,
              memory_sizes=(40, 80), overhead_params={**TINY_PROJECT, "data.garden.n_images": 60},
              large_size=(400, 300))


# ------------------------------------------------------------------------ timing

def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def alternate(ours, base, repeat: int, warmup: bool = True) -> tuple[list[float], list[float]]:
    """Times of `ours` and `base`, run alternately (so drift in the machine's load hits
    both alike), after one untimed warm-up call of each."""
    if warmup:
        ours()
        if base is not None:
            base()
    a, b = [], []
    for _ in range(repeat):
        a.append(timed(ours))
        if base is not None:
            b.append(timed(base))
    return a, b


def rate(work: float, times: list[float]) -> tuple[float, list[float]]:
    """Median rate and [slowest, fastest] rate of `work` units done in each of `times`."""
    return work / statistics.median(times), [work / max(times), work / min(times)]


def figure(id: str, section: str, what: str, unit: str, ours: float, ours_spread, baseline=None,
           baseline_spread=None, target: str | None = None, met: bool | None = None, higher_is_better: bool = True,
           note: str = "", ratio: float | None = None) -> dict:
    if ratio is None and baseline:
        ratio = ours / baseline if higher_is_better else baseline / ours
    return {"id": id, "section": section, "what": what, "unit": unit, "ours": ours, "ours_spread": ours_spread,
            "baseline": baseline, "baseline_spread": baseline_spread, "ratio": ratio, "target": target, "met": met,
            "note": note, "command": f"python -m bench.suite --only {section}"}


def bench_env(work: Path) -> dict:
    """Environment for the subprocesses: hermetic HOME, stores and no telemetry."""
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "DVC_NO_ANALYTICS": "1",
           "FIFTYONE_DO_NOT_TRACK": "true", "FIFTYONE_DATABASE_VALIDATION": "false",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@localhost", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for key in ("FIFTYONE_DATABASE_URI", "FIFTYONE_DATABASE_DIR"):
        env.pop(key, None)  # each project starts its own database
    return env


# ------------------------------------------------------------------------ data

class Data:
    """The files and arrays the sections share, made once per run."""

    def __init__(self, work: Path, sizes: Sizes):
        from colorize.sources.ingest import _process

        self.work, self.sizes = work, sizes
        ingest = load_params(ROOT / "params.yaml")["ingest"]
        self.image_size, self.max_pixels = ingest["image_size"], ingest["max_pixels"]
        wanted = max(sizes.real_images, sizes.working_images, sizes.priors_images, sizes.loader_files)
        if SHARED_FLOWERS.is_dir():
            files = sorted(SHARED_FLOWERS.glob("*/*.jpg"))
            step = max(1, len(files) // wanted)
            self.photos = files[::step][:wanted]  # every class, not the first folder only
            self.photo_source = f"flowers-128 real photos (128x128 JPEG), {len(self.photos)} of {len(files)}"
        else:
            folder = work / "photos"
            folder.mkdir(parents=True, exist_ok=True)
            self.photos = [make_photo(folder / f"p{i:05d}.jpg", 128, 128, seed=i) for i in range(wanted)]
            self.photo_source = f"{wanted} generated photo-like 128x128 JPEGs (../shared/data absent)"
        folder = work / "large"
        folder.mkdir(parents=True, exist_ok=True)
        w, h = sizes.large_size
        self.large = [make_photo(folder / f"l{i:03d}.jpg", w, h, seed=i) for i in range(sizes.large_images)]
        # The working-resolution images, made the pipeline's way (as ingest stores them).
        self.images = np.stack([_process((str(p), "", "", self.image_size, self.max_pixels))["_pixels"]
                                for p in self.photos])

    def working(self, n: int) -> np.ndarray:
        reps = -(-n // len(self.images))
        return np.concatenate([self.images] * reps)[:n]


# ------------------------------------------------------------------------ sections

def bench_ingest(data: Data, sizes: Sizes) -> tuple[list[dict], dict]:
    from colorize.sources.ingest import _process

    figures, details = [], {}
    size = data.image_size
    for id, files, what in (("ingest_real", data.photos[: sizes.real_images], "real photos, 128x128 JPEG"),
                            ("ingest_large", data.large, f"{sizes.large_size[0]}x{sizes.large_size[1]} JPEG")):
        def ours(files=files):
            for p in files:
                _process((str(p), "", "", size, data.max_pixels))

        def base(files=files):
            for p in files:
                seed_style.ingest_one(p, size)

        a, b = alternate(ours, base, sizes.repeat)
        o, os_ = rate(len(files), a)
        s, ss = rate(len(files), b)
        figures.append(figure(id, "ingest", f"ingest: decode + resize to {size}x{size}, {what} (one process)",
                              "img/s", o, os_, s, ss, target=">= 5x", met=o / s >= 5))
        details[id] = {"files": len(files), "ours_s": a, "baseline_s": b}
    return figures, details


def bench_lab(data: Data, sizes: Sizes) -> tuple[list[dict], dict]:
    from colorize.common.colour import uint8_to_lab

    images = data.working(sizes.working_images)
    a, b = alternate(lambda: uint8_to_lab(images), lambda: [seed_style.lab_one(im) for im in images], sizes.repeat)
    o, os_ = rate(len(images), a)
    s, ss = rate(len(images), b)
    return [figure("lab", "lab", f"Lab conversion, {data.image_size}x{data.image_size} "
                   f"(float32 torch, {torch.get_num_threads()} threads, vs skimage float64 per image)",
                   "img/s", o, os_, s, ss)], {"images": len(images)}


def bench_curate(data: Data, sizes: Sizes) -> tuple[list[dict], dict]:
    from colorize.curation.checks import near_duplicate_pairs, quality_scores

    images = data.working(sizes.working_images)
    a, b = alternate(lambda: quality_scores(images),
                     lambda: [quality_scores(images[i : i + 1], batch=1) for i in range(len(images))], sizes.repeat)
    o, os_ = rate(len(images), a)
    s, ss = rate(len(images), b)
    nd, _ = alternate(lambda: near_duplicate_pairs(images), None, sizes.repeat)
    n, ns = rate(len(images), nd)
    return [
        figure("curate_checks", "curate", "curate: quality checks (batches of 256 vs one image per call)",
               "img/s", o, os_, s, ss),
        figure("curate_near_duplicates", "curate", f"curate: near-duplicate search over {len(images)} images "
               "(no seed equivalent: the seeds did not look for near duplicates)", "img/s", n, ns),
    ], {"images": len(images)}


def bench_priors(data: Data, sizes: Sizes) -> tuple[list[dict], dict]:
    from colorize.common.colour import ab_bins
    from colorize.training import priors

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the target is per core
    try:
        images = data.working(sizes.priors_images)
        bins = ab_bins().numpy().astype(np.float64)  # builds the LUT once (cached), untimed
        sub = images[: max(1, min(100, len(images)))]  # the baseline is ~1000x slower: time a slice of it
        a, b = alternate(lambda: priors.image_bin_counts(images, len(bins)),
                         lambda: seed_style.bin_counts(sub, bins), max(1, min(sizes.repeat, 3)))
        agree = bool((priors.image_bin_counts(sub, len(bins)) == seed_style.bin_counts(sub, bins)).all())
    finally:
        torch.set_num_threads(threads)
    px = images.shape[1] * images.shape[2]
    o, os_ = rate(len(images) * px, a)
    s, ss = rate(len(sub) * px, b)
    return [figure("priors", "priors", "priors: ab-bin counts, one core (LUT vs skimage rgb2lab + argmin)",
                   "px/s", o, os_, s, ss, target=">= 50M px/s", met=o >= 50e6,
                   note="" if agree else "counts differ from the baseline's")], \
        {"images": len(images), "baseline_images": len(sub), "counts_agree": agree}


def _working_store(images: np.ndarray, folder: Path) -> tuple[Path, Path]:
    """A one-split manifest + shards of `images`, as the ingest and split stages write them."""
    import pandas as pd

    from colorize.common.shards import ShardWriter

    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(folder / "shards", 1024, images.shape[1])
    where = [writer.add(im) for im in images]
    writer.close()
    rows = pd.DataFrame({"id": [f"i{i}" for i in range(len(images))], "split": "train",
                         "shard": [s for s, _ in where], "shard_index": [i for _, i in where]})
    rows.to_parquet(folder / "manifest.parquet", index=False)
    return folder / "manifest.parquet", folder / "shards"


def bench_loader(data: Data, sizes: Sizes) -> tuple[list[dict], dict]:
    from colorize.training.batches import batch_stream
    from colorize.training.loader import open_split

    cfg = load_params(ROOT / "params.yaml")["train"]
    files = data.photos[: sizes.loader_files]
    images = data.images[: len(files)]
    manifest, shards = _working_store(images, data.work / "loader")
    epochs = cfg["epochs"]

    def ours():
        """The engine's way: `epochs` epochs of batches streamed from the shards (Lab per batch)."""
        split = open_split("train", manifest, shards)
        gen = torch.Generator().manual_seed(0)
        for epoch in range(epochs):
            order = torch.randperm(len(split), generator=gen)
            for _ in batch_stream(split, order, cfg["batch_size"], cfg["crop"], gen, torch.device("cpu")):
                pass

    def base():
        """One epoch of the seed-style Dataset (every epoch costs the same)."""
        for _ in seed_style.seed_loader(files, data.image_size, cfg["crop"], cfg["batch_size"]):
            pass

    a, b = alternate(ours, base, max(1, min(sizes.repeat, 3)))
    o, os_ = rate(len(files) * epochs, a)
    s, ss = rate(len(files), b)
    return [figure("loader", "loader", f"training input pipeline: {data.image_size}x{data.image_size} "
                   f"batches of {cfg['batch_size']} with crop {cfg['crop']} + flip, over train.epochs={epochs} "
                   "(ours streams the shards, Lab per batch; seed-style Dataset decodes every epoch)",
                   "img/s", o, os_, s, ss, target=">= 5x", met=o / s >= 5)], {"files": len(files), "epochs": epochs}


def _zhang_priors(images: np.ndarray, cfg: dict) -> dict[str, torch.Tensor]:
    from colorize.common.colour import ab_bins
    from colorize.training import priors

    bins = ab_bins().numpy().astype(np.float64)
    counts = priors.image_bin_counts(images, len(bins))
    p_smooth = priors.smooth(counts / counts.sum(), bins, cfg["sigma"])
    weights = priors.rebalancing_weights(p_smooth, cfg["mix"])
    return {"bins": torch.from_numpy(bins).float(), "weights": torch.from_numpy(weights).float()}


def train_step_rates(data: Data, sizes: Sizes, device: torch.device, scale: int = 1) -> dict[str, dict]:
    """Per model: img/s with the real loader (batches.batch_stream: the shards read and
    converted to Lab per batch, one batch ahead) and with one batch already on the
    device, and the share of the step spent waiting for the batch."""
    from colorize.training.batches import batch_stream, next_batch
    from colorize.training.engine import LossOf, autocast_for
    from colorize.training.loader import open_split
    from colorize.training.models import build_model
    from colorize.training.models.base import StepContext

    params = load_params(ROOT / "params.yaml")
    cfg = params["train"]
    images = data.working(sizes.working_images)
    if scale > 1:  # a larger working size (the timing does not care that the pixels are upsampled)
        images = np.repeat(np.repeat(images, scale, 1), scale, 2)
    split = open_split("train", *_working_store(images, data.work / f"train_step_{scale}"))
    priors = _zhang_priors(images, params["priors"])
    bs, steps = cfg["batch_size"], sizes.train_steps
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out = {}
    for name in MODEL_NAMES:
        mcfg = {**cfg, "model": name, "crop": cfg["crop"] * scale}
        torch.manual_seed(0)
        model = build_model(mcfg, priors, load_weights=False).to(device)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        optimizers = model.configure_optimizers(mcfg)
        # An epoch after gan's L1 pretraining: its WGAN-GP step, what all but its first
        # pretrain_epochs run (the other models step the same in every epoch).
        ctx = StepContext(mcfg, mcfg["gan"]["pretrain_epochs"] + 1, autocast_for(device), LossOf(model),
                          lambda params: None)  # one process: nothing to average
        gen = torch.Generator().manual_seed(0)
        fixed = next_batch(split, torch.arange(bs) % len(split), mcfg["crop"], gen, device)
        waited = []

        def real():
            wait = 0.0
            stream = batch_stream(split, torch.randint(0, len(split), (steps * bs,), generator=gen), bs,
                                  mcfg["crop"], gen, device)
            for _ in range(steps):
                t = time.perf_counter()
                _, x, y = next(stream)
                sync()
                wait += time.perf_counter() - t
                model.training_step(x, y, optimizers, ctx)
            stream.close()
            sync()
            waited.append(wait)

        def memory():
            for _ in range(steps):
                model.training_step(*fixed, optimizers, ctx)
            sync()

        a, b = alternate(real, memory, sizes.repeat)
        waited = waited[1:]  # drop the warm-up's
        out[name] = {"real": rate(steps * bs, a), "memory": rate(steps * bs, b),
                     "data_wait_share": statistics.median(w / t for w, t in zip(waited, a)), "real_s": a,
                     "memory_s": b}
    return out


def _train_step_figures(rates: dict, id_prefix: str, section: str, label: str) -> list[dict]:
    """One figure per model: real loader against a batch already on the device."""
    figures = []
    for name, r in rates.items():
        (o, os_), (m, ms) = r["real"], r["memory"]
        figures.append(figure(f"{id_prefix}{name}", section,
                              f"{label.format(name=name)}: streamed from the shards (Lab per batch) vs batch already in memory; "
                              f"{100 * r['data_wait_share']:.1f}% of the step getting the batch",
                              "img/s", o, os_, m, ms, target=">= 0.95x", met=o / m >= 0.95))
    return figures


def bench_train_step(data: Data, sizes: Sizes) -> tuple[list[dict], dict]:
    """Per model, at the working size and at twice it (64 and 128 px by default)."""
    cfg = load_params(ROOT / "params.yaml")["train"]
    figures, details = [], {}
    for scale in (1, 2):
        side = data.image_size * scale
        rates = train_step_rates(data, sizes, torch.device("cpu"), scale)
        label = (f"train step, {{name}} at {side} px (width {cfg['width']}, depth {cfg['depth']}, "
                 f"batch {cfg['batch_size']}, crop {cfg['crop'] * scale})")
        figures += _train_step_figures(rates, "train_step_" if scale == 1 else f"train_step_{side}px_", "train_step",
                                       label)
        details[f"{side}px"] = {k: {"data_wait_share": v["data_wait_share"], "real_s": v["real_s"],
                                    "memory_s": v["memory_s"]} for k, v in rates.items()}
    return figures, details


def bench_gpu(data: Data, sizes: Sizes) -> tuple[list[dict], dict]:
    if not torch.cuda.is_available():
        return [], {"ran": False, "reason": "torch.cuda.is_available() is False on this machine"}
    rates = train_step_rates(data, sizes, torch.device("cuda"))
    figures = _train_step_figures(rates, "gpu_train_step_", "gpu",
                                  "GPU train step, {name}, bf16 autocast + channels_last")
    return figures, {"ran": True, "device": torch.cuda.get_device_name(0),
                     **{k: {"data_wait_share": v["data_wait_share"]} for k, v in rates.items()}}


def bench_evaluate(data: Data, sizes: Sizes) -> tuple[list[dict], dict]:
    from colorize.common.colour import compose, uint8_to_lab
    from colorize.evaluation.metrics import colourfulness, delta_e_uint8, psnr_uint8, ssim_uint8
    from colorize.training.models import build_model, predict_ab

    cfg = load_params(ROOT / "params.yaml")["train"]
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False).eval()
    images = data.working(sizes.working_images)

    def ours():
        L = uint8_to_lab(images)[..., 0]
        rgb = compose(L, predict_ab(model, L))
        psnr_uint8(rgb, images), ssim_uint8(rgb, images), delta_e_uint8(rgb, images), colourfulness(rgb)

    def base():
        for im in images:
            seed_style.evaluate_one(model, im)

    a, b = alternate(ours, base, max(1, min(sizes.repeat, 3)))
    o, os_ = rate(len(images), a)
    s, ss = rate(len(images), b)
    return [figure("evaluate", "evaluate", f"evaluate: {cfg['model']} predictions + PSNR, SSIM, dE2000, "
                   "colourfulness (batched torch vs per image skimage)", "img/s", o, os_, s, ss)], \
        {"images": len(images)}


@contextlib.contextmanager
def _environ(env: dict):
    """os.environ = env for the block (tests.conftest.make_project runs git and dvc with it)."""
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


def _wrapped(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(seconds, peak RSS MB) of cmd in a fresh process under a small stdlib wrapper: a
    child forked from this (large) process would inherit its RSS high-water mark."""
    seconds, rss, _ = run_measured(cmd, cwd, env)
    return seconds, rss


def bench_colorize(data: Data, sizes: Sizes) -> tuple[list[dict], dict]:
    work = data.work / "colorize"
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    model = make_checkpoint(work / "default_random_init.pt")  # speed does not depend on the weights
    figures, details = [], {}
    py = sys.executable
    for name, w, h in sizes.colorize_sizes:
        photo = make_photo(work / f"photo_{name}.jpg", w, h)
        ours_runs, base_runs = [], []
        for _ in range(sizes.colorize_runs):
            ours_runs.append(_wrapped([py, "-m", "colorize.cli.colorize", str(photo), "-o", str(work / "out"), "--model",
                                       str(model), "--overwrite"], ROOT, env))
            base_runs.append(_wrapped([py, "-m", "bench.seed_style", "colorize", str(photo),
                                       str(work / f"seed_{name}.png"), str(model)], ROOT, env))
        inproc = subprocess.run([py, str(ROOT / "bench" / "colorize_budget.py"), "--_inprocess", str(photo),
                                 str(work / "out"), str(model), str(max(sizes.colorize_runs, 3))],
                                cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        seconds = float(inproc.stdout.strip())
        label = f"{w}x{h} = {w * h / 1e6:.1f} MP"
        o, os_ = rate(1, [t for t, _ in ours_runs])
        s, ss = rate(1, [t for t, _ in base_runs])
        figures.append(figure(f"colorize_{name}_cli", "colorize", f"colorize CLI, {label}, wall time incl. "
                              "start-up (seed-style: float64 skimage at full resolution)", "s",
                              1 / o, [1 / os_[1], 1 / os_[0]], 1 / s, [1 / ss[1], 1 / ss[0]],
                              higher_is_better=False))
        if name == "1mp":
            figures.append(figure(f"colorize_{name}_latency", "colorize", f"colorize, {label}, model loaded: "
                                  "decode + colorize + PNG write (one thread)", "s", seconds, [seconds, seconds],
                                  target="<= 1 s", met=seconds <= 1.0))
        peak_o = max(m for _, m in ours_runs)
        peak_s = max(m for _, m in base_runs)
        figures.append(figure(f"colorize_{name}_peak_memory", "colorize", f"colorize, {label}, peak RSS of the "
                              "process", "MB", peak_o, [min(m for _, m in ours_runs), peak_o], peak_s,
                              [min(m for _, m in base_runs), peak_s], higher_is_better=False,
                              target="<= 2048 MB" if name == "24mp" else None,
                              met=peak_o <= 2048 if name == "24mp" else None))
        details[name] = {"ours": ours_runs, "seed_style": base_runs, "in_process_s": seconds}
    return figures, details


MEMORY_STAGES = ("download", "ingest", "relevance", "curate", "split", "priors")
FLAT_STAGES = ("ingest", "curate", "priors")  # the target names these three


def bench_memory(data: Data, sizes: Sizes) -> tuple[list[dict], dict]:
    from tests.conftest import make_project

    env = bench_env(data.work / "memory")
    peaks: dict[int, dict[str, float]] = {}
    for n in sizes.memory_sizes:
        with _environ(env):
            proj = make_project(data.work / "memory" / f"n{n}", {"data.garden.n_images": n})
        peaks[n] = {}
        for stage in MEMORY_STAGES:
            seconds, mb = _wrapped([sys.executable, "-m", f"colorize.stages.{stage}"], proj, env)
            peaks[n][stage] = {"seconds": seconds, "peak_rss_mb": mb}
    lo, hi = sizes.memory_sizes[0], sizes.memory_sizes[-1]
    figures = []
    for stage in MEMORY_STAGES:
        a, b = peaks[lo][stage]["peak_rss_mb"], peaks[hi][stage]["peak_rss_mb"]
        flat = stage in FLAT_STAGES
        figures.append(figure(f"memory_{stage}", "memory", f"peak RSS of the {stage} stage, {lo:,} -> {hi:,} "
                              "garden images (ratio = growth)", "MB", b, [a, b], a, None,
                              target="<= 1.3x growth" if flat else None, met=(b / a <= 1.3) if flat else None,
                              ratio=b / a))
    return figures, {str(n): v for n, v in peaks.items()}


def bench_overhead(data: Data, sizes: Sizes) -> tuple[list[dict], dict]:
    from tests.conftest import make_project

    work = data.work / "overhead"
    env = bench_env(work)
    dvc = str(Path(sys.executable).parent / "dvc")
    with _environ(env):
        proj = make_project(work / "proj", sizes.overhead_params)

    def repro() -> str:
        out = subprocess.run([dvc, "repro"], cwd=proj, env=env, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"dvc repro failed: {out.stderr[-2000:]}")
        return out.stdout

    t = time.perf_counter()
    repro()
    first = time.perf_counter() - t
    noop = []
    for _ in range(max(3, sizes.repeat)):
        t = time.perf_counter()
        text = repro()
        noop.append(time.perf_counter() - t)
        assert "Running stage" not in text, text
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["train"]["lr"] = params["train"]["lr"] * 0.5
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = re.findall(r"Running stage '([^']+)'", repro())
    stages = list(yaml.safe_load((proj / "dvc.yaml").read_text())["stages"])
    expected = ["params", "train", "evaluate", "report"]  # params: the file changed; report renders evaluate
    m, ms = statistics.median(noop), [min(noop), max(noop)]
    return [
        figure("noop_repro", "overhead", f"no-op `dvc repro` of the {len(stages)}-stage pipeline", "s", m, ms,
               target="<= 2 s", met=m <= 2.0, higher_is_better=False),
        figure("rerun_after_train_change", "overhead", "stages rerun after a train.* change (train.lr halved): "
               + ", ".join(rerun), "stages", len(rerun), [len(rerun), len(rerun)],
               target="train + downstream only", met=rerun == expected,
               note="report is evaluate's HTML view; every stage upstream of train is skipped"),
    ], {"first_repro_s": first, "noop_s": noop, "rerun": rerun, "stages": stages, "project": sizes.overhead_params}


RUNNERS = {"ingest": bench_ingest, "lab": bench_lab, "curate": bench_curate, "priors": bench_priors,
           "loader": bench_loader, "train_step": bench_train_step, "evaluate": bench_evaluate,
           "colorize": bench_colorize, "memory": bench_memory, "overhead": bench_overhead, "gpu": bench_gpu}


# ------------------------------------------------------------------------ output

def _fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "px/s":
        return f"{value / 1e6:,.1f} M"
    if unit == "stages":
        return f"{value:.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _spread(spread, unit: str) -> str:
    if not spread or spread[0] == spread[1]:
        return ""
    return f" ({_fmt(spread[0], unit)}-{_fmt(spread[1], unit)})"


def table(figures: list[dict]) -> str:
    rows = ["| figure | ours (spread) | seed-style baseline (spread) | ratio | target | met | command |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for f in figures:
        met = {True: "yes", False: "**no**", None: ""}[f["met"]]
        ratio = f"{f['ratio']:.2f}x" if f["ratio"] is not None else ""
        base = f"{_fmt(f['baseline'], f['unit'])}{_spread(f['baseline_spread'], f['unit'])}" \
            if f["baseline"] is not None else "-"
        rows.append(f"| {f['what']} | {_fmt(f['ours'], f['unit'])}{_spread(f['ours_spread'], f['unit'])} {f['unit']} "
                    f"| {base} | {ratio} | {f['target'] or ''} | {met} | `{f['command']}` |")
    return "\n".join(rows)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "python": platform.python_version(), "platform": platform.platform()}


def update_table(doc: Path, report: dict) -> None:
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: no {BEGIN} ... {END} markers to put the table between")
    m = report["machine"]
    body = (f"\n_Measured {report['date']} on {m['cpus']} CPU cores, torch {m['torch']} "
            f"({'CUDA' if m['cuda'] else 'no GPU'}); medians of {report['repeat']} runs unless the section says "
            f"otherwise; data: {report['data']}._\n\n{table(report['figures'])}\n")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    doc.write_text(text[:start] + body + text[end:])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and one run: checks the code, not the speed")
    ap.add_argument("--only", default="", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "bench.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md",
                    help="the Markdown file whose bench:begin/bench:end table is rewritten")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    sizes = SMOKE if args.smoke else FULL
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_"))
    work.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() and len(only) < len(SECTIONS) else None
    try:
        data = Data(work, sizes)
        figures, details = [], {}
        for section in SECTIONS:
            if section not in only:
                continue
            print(f"bench: {section} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            f, d = RUNNERS[section](data, sizes)
            details[section] = {**d, "seconds": round(time.perf_counter() - t, 1)}
            figures += f
            for x in f:
                ratio = f", {x['ratio']:.2f}x" if x["ratio"] is not None else ""
                print(f"  {x['id']}: {_fmt(x['ours'], x['unit'])} {x['unit']}{ratio}", file=sys.stderr, flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if previous:  # --only: keep the other sections' figures from the last full run
        keep = [f for f in previous["figures"] if f["section"] not in only]
        order = {s: i for i, s in enumerate(SECTIONS)}
        figures = sorted(keep + figures, key=lambda f: order[f["section"]])
        details = {**{k: v for k, v in previous["details"].items() if k not in only}, **details}
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "smoke": args.smoke, "repeat": sizes.repeat,
              "data": data.photo_source, "figures": figures, "details": details,
              "targets_missed": [f["id"] for f in figures if f["met"] is False]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    update_table(args.doc, report)
    print(f"bench: wrote {args.out} and the table in {args.doc}"
          + (f"; targets missed: {report['targets_missed']}" if report["targets_missed"] else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
