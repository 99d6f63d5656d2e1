"""The training input: which images an epoch draws, and how each batch is made.

Each batch is read from the memory-mapped shards and converted to Lab on its own
(colorize/training/loader.py: memory stays flat whatever the split's size); on CUDA a
background thread makes it ahead of the model (`batch_stream`). Each sample gets a random crop (`train.crop`) and a horizontal flip. Order: a DistributedSampler over the
training set (one process or many), or a weighted sample: with `train.hard_examples` > 0
the images with the highest recent loss are drawn more often (`LossTable`), and with
`train.hard_tag_weight` > 1 those people tagged `hard` in the App (`hard_tag_weights`).
"""
from __future__ import annotations

import math
import queue
import threading

import numpy as np
import torch

from colorize.training.distributed import Dist
from colorize.training.loader import StreamedSplit, model_inputs

PREFETCH = 2  # batches made ahead of a GPU model by a background thread


def _windows(n: int, h: int, w: int, crop: int, gen: torch.Generator):
    """Each sample's random window and flip: (side_h, side_w, tops, lefts, flips). The
    draws (top, left, flip) are the same as ever, so batches are bit-identical for a seed."""
    if crop and crop < h:
        top = torch.randint(0, h - crop + 1, (n,), generator=gen).tolist()
        left = torch.randint(0, w - crop + 1, (n,), generator=gen).tolist()
        side_h, side_w = crop, crop
    else:
        top = left = [0] * n
        side_h, side_w = h, w
    flip = (torch.rand(n, generator=gen) < 0.5).tolist()
    return side_h, side_w, top, left, flip


def augment(x: torch.Tensor, y: torch.Tensor, crop: int, gen: torch.Generator,
            idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random crop of side `crop` (0 = none) and a horizontal flip per sample, of the
    samples `idx` of x and y (all of them by default), both (n, C, H, W).

    Each sample's window is copied straight from the full tensors into the batch (one
    copy per sample; gathering the batch first and cropping it with index tensors cost
    ~10% of a cnn step: bench/suite.py, train_step)."""
    n_all, _, h, w = x.shape
    idx = torch.arange(n_all) if idx is None else idx
    side_h, side_w, top, left, flip = _windows(len(idx), h, w, crop, gen)
    bx = torch.empty((len(idx), x.shape[1], side_h, side_w), dtype=x.dtype)
    by = torch.empty((len(idx), y.shape[1], side_h, side_w), dtype=y.dtype)
    for k, (i, t, l, f) in enumerate(zip(idx.tolist(), top, left, flip)):
        wx, wy = x[i, :, t : t + side_h, l : l + side_w], y[i, :, t : t + side_h, l : l + side_w]
        bx[k], by[k] = (wx.flip(-1), wy.flip(-1)) if f else (wx, wy)
    return bx, by


def augment_rgb(rgb: np.ndarray, crop: int, gen: torch.Generator) -> np.ndarray:
    """`augment` on uint8 images (n, H, W, 3), before Lab: the same draws and windows, so
    Lab of the result equals augment of the Lab (Lab is per pixel), on 4x fewer bytes
    and only the pixels the crop keeps ((56/64)^2 of them at the defaults)."""
    n, h, w, c = rgb.shape
    side_h, side_w, top, left, flip = _windows(n, h, w, crop, gen)
    out = np.empty((n, side_h, side_w, c), dtype=rgb.dtype)
    for k, (t, l, f) in enumerate(zip(top, left, flip)):
        window = rgb[k, t : t + side_h, l : l + side_w]
        out[k] = window[:, ::-1] if f else window
    return out


class LossTable:
    """The latest training loss of every training image, and how often each was drawn."""

    def __init__(self, n: int):
        self.loss = torch.full((n,), float("nan"))
        self.drawn = torch.zeros(n, dtype=torch.long)

    def update(self, idx: torch.Tensor, losses: torch.Tensor) -> None:
        self.loss[idx] = losses.detach().float().cpu()
        self.drawn += torch.bincount(idx, minlength=len(self.drawn))

    def weights(self, strength: float) -> torch.Tensor:
        """Sampling weight (loss / mean loss) ** strength; unseen images count as average."""
        known = self.loss[~self.loss.isnan()]
        mean = known.mean() if len(known) else torch.tensor(1.0)
        rel = torch.nan_to_num(self.loss / mean.clamp_min(1e-12), nan=1.0).clamp_min(1e-3)
        return rel**strength


def epoch_indices(n: int, epoch: int, seed: int, d: Dist, table: LossTable, strength: float,
                  boost: torch.Tensor | None = None) -> torch.Tensor:
    """This rank's training indices for one epoch. Uniform: a DistributedSampler (every
    image once, shuffled by seed + epoch). Hard examples (loss-weighted, `strength` > 0,
    and/or `boost`, a per-image weight such as `hard_tag_weights`): n draws with
    replacement, weighted by the loss table times `boost`, split across ranks the same way."""
    if strength <= 0 and boost is None:
        sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=d.world, rank=d.rank,
                                                      shuffle=True, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long)
    weights = table.weights(strength) if strength > 0 else torch.ones(n)
    if boost is not None:
        weights = weights * boost
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    drawn = torch.multinomial(weights, n, replacement=True, generator=gen)
    per_rank = math.ceil(n / d.world)
    drawn = torch.cat([drawn, drawn[: per_rank * d.world - n]])  # pad like DistributedSampler
    return drawn[d.rank :: d.world]


def hard_tag_weights(rows, weight: float) -> torch.Tensor | None:
    """Per-image sampling weight of a split's `rows`: `weight` for the images people
    tagged `hard` in the App (decisions.csv, the split manifest's `hard` column), 1 for
    the rest; None when that changes nothing (none tagged, or weight 1), so the epoch
    stays the uniform shuffle, the same bits as before the column existed."""
    column = rows.get("hard")
    hard = np.zeros(len(rows), dtype=bool) if column is None else column.fillna(False).to_numpy(dtype=bool)
    if weight == 1.0 or not hard.any():
        return None
    return torch.from_numpy(np.where(hard, weight, 1.0))


def next_batch(data: StreamedSplit, idx: torch.Tensor, crop: int, gen: torch.Generator,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training input pipeline: the images at `idx` read from the shards, to Lab,
    augmented, on the device (channels_last on CUDA). The draws are the same as when the
    split was held in memory, so batches are bit-identical for a seed."""
    x, y = model_inputs(augment_rgb(data.rgb(idx.numpy()), crop, gen))
    x, y = x.to(device), y.to(device)
    if device.type == "cuda":
        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    return x, y


def batch_stream(data: StreamedSplit, idx_all: torch.Tensor, batch_size: int, crop: int, gen: torch.Generator,
                 device: torch.device, ahead: int | None = None):
    """Yield (idx, x, y) for consecutive batches of idx_all.

    `ahead` batches are made early by one background thread (default: PREFETCH on CUDA,
    where the CPU is idle while the GPU steps; none on CPU, where a second thread only
    competes with the step for the same cores: measured 0.58-0.84x of inline on 2 cores,
    docs/scale.md). One thread draws from `gen` in order either way, so the batches are
    the same. An error there is raised here; leaving early stops the thread."""
    ahead = (PREFETCH if device.type == "cuda" else 0) if ahead is None else ahead
    slices = [idx_all[start : start + batch_size] for start in range(0, len(idx_all), batch_size)]
    if ahead <= 0:
        for idx in slices:
            yield (idx, *next_batch(data, idx, crop, gen, device))
        return
    ready: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def make() -> None:
        try:
            for idx in slices:
                if not put((idx, *next_batch(data, idx, crop, gen, device))):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(e)

    worker = threading.Thread(target=make, name="batch-stream", daemon=True)
    worker.start()
    try:
        for _ in slices:
            item = ready.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()
