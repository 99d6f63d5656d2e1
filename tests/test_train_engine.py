"""The training engine (colorize/training/engine.py) for real: `python -m
colorize.stages.train` as DVC runs it, on a tiny prepared project. A run killed with
SIGKILL resumes from its last checkpoint and ends with the same weights as an
uninterrupted run; `train.nproc: 2` runs two gloo DDP processes whose final weights are
identical; the schedule, crop and hard-example sampler behave."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from colorize.common import paths
from colorize.common.params import validate
from colorize.training.batches import LossTable, augment, epoch_indices
from colorize.training.distributed import Dist
from colorize.training.engine import warmup_cosine
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def tiny_params(**train_overrides) -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["garden"]["n_images"] = 120
    p["ingest"]["image_size"] = 32
    p["curate"]["min_side"] = 24
    p["train"].update({"epochs": 4, "width": 8, "depth": 2, "batch_size": 16, "crop": 24, **train_overrides})
    return validate(p)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A project directory with download .. split already run (no training yet). The
    stages run as DVC runs them, one process each: an in-process curate would meet a
    FiftyOne already imported and pointed at another test's (stopped) database."""
    work = tmp_path_factory.mktemp("engine") / "base"
    work.mkdir()
    shutil.copytree(ROOT / "colorize", work / "colorize", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "data" / "curation").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "curation" / "decisions.csv", work / "data" / "curation" / "decisions.csv")
    (work / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    env = {**os.environ, "PYTHONPATH": str(work)}
    for stage in ("download", "ingest", "curate", "split"):
        out = subprocess.run([sys.executable, "-m", f"colorize.stages.{stage}"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, (stage, out.stderr[-2000:])
    return work


def copy_of(prepared: Path, tmp_path: Path, name: str, **train_overrides) -> Path:
    dest = tmp_path / name
    shutil.copytree(prepared, dest, symlinks=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(**train_overrides)))
    return dest


def run_train(cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, "-m", "colorize.stages.train"], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=900, **kw)


def weights(cwd: Path) -> dict:
    return torch.load(cwd / "models" / "model.pt", weights_only=True)["model"]


def kill_at_first_checkpoint(cwd: Path, env: dict | None = None) -> int:
    """Start a training, SIGKILL it (no handler, no clean-up) as soon as its first
    checkpoint appears, and return the epoch that checkpoint holds."""
    env = {**os.environ, "PYTHONPATH": str(cwd), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "colorize.stages.train"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = cwd / paths.RESUME
    deadline = time.time() + 600
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished (or failed) before it could be killed"
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert not (cwd / paths.MODEL).exists()
    return epoch


def test_killed_run_resumes_to_the_same_weights(prepared, tmp_path):
    straight = copy_of(prepared, tmp_path, "straight")
    done = run_train(straight)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (straight / paths.RESUME).exists()  # removed once training completes

    killed = copy_of(prepared, tmp_path, "killed")
    epoch_at_kill = kill_at_first_checkpoint(killed)  # kill -9: no handler, no clean-up
    assert 1 <= epoch_at_kill < 4

    resumed = run_train(killed)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {paths.RESUME} after epoch {epoch_at_kill}" in resumed.stdout
    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run ended with different weights"
    history = (killed / paths.TRAIN_HISTORY).read_text().splitlines()
    assert len(history) == 1 + 4  # header + one row per epoch, none lost or repeated
    # the same MLflow run continued
    assert json.loads((killed / paths.TRAIN_REPORT).read_text())["mlflow_run_id"]


def test_resume_state_from_other_params_is_not_used(prepared, tmp_path):
    proj = copy_of(prepared, tmp_path, "other")
    kill_at_first_checkpoint(proj)
    (proj / "params.yaml").write_text(yaml.safe_dump(tiny_params(lr=0.001)))
    again = run_train(proj)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "from other params or data; starting afresh" in again.stdout


@pytest.mark.parametrize("model, extra", [("unet", {}), ("gan", {"epochs": 2, "gan": {"pretrain_epochs": 1, "lambda_l1": 100.0, "lambda_gp": 10.0, "critic_lr": 0.0001}})])
def test_two_ddp_processes_end_with_identical_weights(prepared, tmp_path, model, extra):
    proj = copy_of(prepared, tmp_path, f"ddp-{model}", nproc=2, threads=2, model=model, **extra)
    out = run_train(proj)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    assert "torch.distributed.run --standalone --nproc_per_node=2" in out.stdout
    report = json.loads((proj / paths.TRAIN_REPORT).read_text())
    assert report["world_size"] == 2
    sums = report["rank_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    assert (proj / paths.MODEL).exists() and not (proj / paths.RESUME).exists()


def test_hard_examples_draw_high_loss_images_more_often(prepared, tmp_path):
    proj = copy_of(prepared, tmp_path, "hard", hard_examples=2.0)
    out = run_train(proj)
    assert out.returncode == 0, out.stderr[-2000:]
    import pandas as pd

    table = pd.read_csv(proj / paths.LOSS_TABLE)
    assert table["drawn"].sum() == 4 * len(table)  # n draws per epoch
    # after the first epoch, the draws follow the loss: the hardest quarter is drawn
    # more often than the easiest quarter
    q = table["loss"].quantile([0.25, 0.75])
    assert table.loc[table["loss"] >= q[0.75], "drawn"].mean() > table.loc[table["loss"] <= q[0.25], "drawn"].mean()


# ----------------------------------------------------------------------- pure pieces

def test_warmup_then_cosine():
    f = warmup_cosine(warmup_steps=4, total_steps=20)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(12) == pytest.approx(0.5)  # halfway through the cosine
    assert f(20) == pytest.approx(0.0, abs=1e-12)
    assert all(f(s) >= f(s + 1) for s in range(4, 20))


def test_crop_and_flip_keep_pairs_aligned():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    y = torch.cat([x, -x], 1)  # ab made from L, so misalignment shows
    cx, cy = augment(x, y, crop=4, gen=gen)
    assert cx.shape == (2, 1, 4, 4) and cy.shape == (2, 2, 4, 4)
    assert torch.equal(cy[:, :1], cx) and torch.equal(cy[:, 1:], -cx)
    # each crop is a contiguous (possibly mirrored) window of its own image
    for i in range(2):
        window = cx[i, 0]
        found = any(torch.equal(window, x[i, 0, r : r + 4, c : c + 4]) or torch.equal(window, x[i, 0, r : r + 4, c : c + 4].flip(-1))
                    for r in range(5) for c in range(5))
        assert found


def test_uniform_epochs_visit_every_image_once_across_ranks():
    table = LossTable(10)
    idx = [epoch_indices(10, 3, 0, Dist(rank=r, world=2), table, 0.0) for r in range(2)]
    assert sorted(torch.cat(idx).tolist()) == list(range(10))
    again = epoch_indices(10, 3, 0, Dist(), table, 0.0)
    assert sorted(again.tolist()) == list(range(10))
    assert not torch.equal(again, epoch_indices(10, 4, 0, Dist(), table, 0.0))  # reshuffled per epoch


# ------------------------------------------------------------- streamed from the shards

def _working_store(folder: Path, n: int, side: int, shard_size: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """A train split of n random images in shards, rows in an order other than the shards'."""
    import numpy as np
    import pandas as pd

    from colorize.common.shards import ShardWriter

    rng = np.random.default_rng(seed)
    writer = ShardWriter(folder / "shards", shard_size, side)
    where = [writer.add(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(n)]
    writer.close()
    order = rng.permutation(n)
    rows = pd.DataFrame({"id": [f"i{k}" for k in order], "split": "train",
                         "shard": [where[k][0] for k in order], "shard_index": [where[k][1] for k in order]})
    rows.to_parquet(folder / "manifest.parquet", index=False)
    return folder / "manifest.parquet", folder / "shards"


def test_stream_batches_equal_those_of_the_split_held_in_memory(tmp_path):
    """The same draws give bit-identical batches: Lab per batch equals Lab of the whole split."""
    from colorize.common.colour import normalise_ab, normalise_l
    from colorize.training.batches import batch_stream, next_batch
    from colorize.training.loader import load_split, open_split

    store = _working_store(tmp_path, 150, 24)
    whole, streamed = load_split("train", *store), open_split("train", *store)
    L, ab = normalise_l(whole.L)[:, None], normalise_ab(whole.ab).permute(0, 3, 1, 2).contiguous()
    order = torch.randperm(150, generator=torch.Generator().manual_seed(1))
    gens = [torch.Generator().manual_seed(2) for _ in range(4)]
    cpu = torch.device("cpu")
    streams = [batch_stream(streamed, order, 16, 20, gens[2], cpu),  # inline, as on CPU
               batch_stream(streamed, order, 16, 20, gens[3], cpu, ahead=2)]  # a thread ahead, as on CUDA
    for start in range(0, 150, 16):
        idx = order[start : start + 16]
        want = augment(L, ab, 20, gens[0], idx)
        got = next_batch(streamed, idx, 20, gens[1], cpu)
        assert all(torch.equal(w, g) for w, g in zip(want, got))
        for stream in streams:
            s_idx, *s_batch = next(stream)
            assert torch.equal(s_idx, idx) and all(torch.equal(w, s) for w, s in zip(want, s_batch))
    assert all(next(stream, None) is None for stream in streams)
    assert (streamed.rgb(range(150)) == whole.rgb).all()


@pytest.mark.parametrize("ahead", [0, 2])
def test_stream_error_in_the_reader_reaches_the_training_loop(tmp_path, ahead):
    from colorize.training.batches import batch_stream
    from colorize.training.loader import open_split

    manifest, shards = _working_store(tmp_path, 40, 16, shard_size=16)
    split = open_split("train", manifest, shards)
    (shards / "shard-00001.npy").unlink()  # a shard gone mid-way
    stream = batch_stream(split, torch.arange(40), 8, 0, torch.Generator(), torch.device("cpu"), ahead=ahead)
    with pytest.raises(FileNotFoundError):
        for _ in stream:
            pass


# A process that streams one epoch of batches (and, with `memory`, loads the split whole
# first, as training did before) and prints its peak anonymous memory in MB, sampled.
# Anonymous, not RSS: the shard pages the OS keeps are file cache, shared and dropped
# under pressure; ru_maxrss would count them because they are mapped.
PEAK_ANON = """
import sys, threading, time
import torch
from colorize.training.batches import batch_stream
from colorize.training.loader import load_split, open_split
manifest, shards, mode = sys.argv[1], sys.argv[2], sys.argv[3]
crop = int(sys.argv[4]) if len(sys.argv) > 4 else 56
peak, done = [0], threading.Event()
def sample():
    while not done.is_set():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]))
        time.sleep(0.002)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
held = load_split("train", manifest, shards) if mode == "memory" else None
split = open_split("train", manifest, shards)
for _ in batch_stream(split, torch.randperm(len(split)), 32, crop, torch.Generator(), torch.device("cpu")):
    time.sleep(0.001)
done.set(); sampler.join()
print(peak[0] / 1024)
"""


def _peak_anon_mb(store: tuple[Path, Path], mode: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PEAK_ANON, *map(str, store), mode], capture_output=True, text=True,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.split()[-1])


def test_stream_memory_does_not_grow_with_the_split(tmp_path):
    """8x the images: streamed, the peak stays flat; held in memory (the control, what
    training did before) it grows by the images' Lab, so the measurement can tell."""
    small, large = _working_store(tmp_path / "small", 400, 64), _working_store(tmp_path / "large", 3200, 64)
    streamed = {n: _peak_anon_mb(store, "stream") for n, store in (("small", small), ("large", large))}
    held = {n: _peak_anon_mb(store, "memory") for n, store in (("small", small), ("large", large))}
    print(f"peak anonymous MB, streamed {streamed}, held in memory {held}")
    lab_of_the_extra_images = 2800 * 64 * 64 * 3 * 4 / 2**20  # 131 MB
    assert held["large"] - held["small"] > 0.8 * lab_of_the_extra_images  # the control grows
    # Streamed, what still grows is small bookkeeping and glibc's heap (6-15 MB seen, on
    # this machine and on CI's); the whole split's Lab would be 131 MB more.
    assert streamed["large"] - streamed["small"] < 0.25 * lab_of_the_extra_images  # < 33 MB
