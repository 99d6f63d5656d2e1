"""Relevance classifier: is this a flower photo (relevant) or not (irrelevant)?

A small CNN scores every image; those below `threshold` get flagged as irrelevant (a
baby, a dog, the astronaut). It learns from WEAK labels the pipeline already has:
y = 1 for images from flower sources, 0 for known non-flowers (Open Images negatives,
the garden's planted photos, images tagged reject/irrelevant), -1 for unknown (scored
only). The irrelevant class is tiny (the garden has ~26 beside ~850 flowers), so every
batch is drawn class-balanced; a probability then reads as if both classes were equally
common, which is what makes 0.5 a sensible default threshold.

Colour is kept in the input: flowers are far more saturated than everyday photos, and
that is the cheapest cue there is.

    model, report = train_relevance(images, y, params, seed=0)   # (n, S, S, 3) uint8, or a ShardReader
    p = score(model, images)          # (n,) relevance in [0, 1], 1 = flower
    save(model, "models/relevance.pt", meta=report); model, meta = load("models/relevance.pt")

`params` is params.yaml's validated `relevance` section (colorize/common/params.py).
The `relevance` stage (colorize/stages/relevance.py) trains it on the pipeline's weak
labels (`weak_labels`, `fit`), and scores every usable image for curate to threshold.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from colorize.common.files import atomic_write
from colorize.common.shards import ShardReader

FEATURE_DIM = 128      # size of the embedding `features`/`embed` return
WEIGHT_DECAY = 1e-4    # AdamW weight decay
CROP_SCALE = (0.75, 1.0)     # random zoom: side of the crop as a share of the image side
BRIGHTNESS = 0.2             # random brightness factor in [1 - B, 1 + B]
MEAN, STD = 0.45, 0.25       # input normalisation of sRGB in [0, 1]; BN does the rest


class RelevanceNet(nn.Module):
    """A strided stem, then 3 x (2x2 max pool, 3x3 conv, BN, ReLU), global average pool,
    FEATURE_DIM features, 1 logit. Channels: width, 2, 4, 8 x width.

    The stem halves the resolution at once: full-resolution layers are most of a small
    CNN's cost on CPU, and "is it a flower" needs colour and texture, not fine detail.
    Global pooling makes the net indifferent to the input size (32 or 64 px both work).
    """

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.params = {"width": width}  # train_relevance/load put the whole relevance params here; save keeps them
        channels = [width, 2 * width, 4 * width, 8 * width]
        layers = [nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [
                nn.MaxPool2d(2),
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers)
        self.embedding = nn.Sequential(nn.Linear(channels[-1], FEATURE_DIM), nn.ReLU(inplace=True))
        self.head = nn.Linear(FEATURE_DIM, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, FEATURE_DIM) embedding of normalised images (n, 3, S, S)."""
        return self.embedding(self.body(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n,) logits of "relevant"."""
        return self.head(self.features(x)).squeeze(1)


def to_input(images: np.ndarray) -> torch.Tensor:
    """(n, S, S, 3) uint8 sRGB -> (n, 3, S, S) float, normalised."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    return (x - MEAN) / STD


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, zoomed crop and brightness, per image. Hue is left alone:
    colour is what tells a flower apart."""
    n = len(x)
    scale = torch.empty(n).uniform_(*CROP_SCALE, generator=gen)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    # the crop may sit anywhere inside the image: centre within +-(1 - scale)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - scale)[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    bright = torch.empty(n, 1, 1, 1).uniform_(1 - BRIGHTNESS, 1 + BRIGHTNESS, generator=gen)
    return ((x * STD + MEAN) * bright - MEAN) / STD  # scale the [0, 1] pixels, not the normalised ones


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve for binary labels (1 = positive), ties counted as half.

    Mann-Whitney: the chance a random positive outscores a random negative. NaN when a
    class is missing.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2  # 1-based rank, averaged over ties
    ranks = mean_rank[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def holdout_mask(y: np.ndarray, share: float, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Seeded, stratified choice of the labelled images to hold out (True = held out).

    With `groups`, images of one group (e.g. crops of one source photo) land on the same
    side, so the held-out number is not flattered by near-copies seen in training. Each
    class keeps at least one group for training.
    """
    rng = np.random.default_rng(seed)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    held = np.zeros(len(y), dtype=bool)
    for label in (0, 1):
        members = np.flatnonzero(y == label)
        names = rng.permutation(np.unique(groups[members]))
        wanted = min(round(share * len(members)), len(members) - 1)
        taken = 0
        for name in names[:-1]:  # never the last group: training needs one
            if taken >= wanted:
                break
            in_group = members[groups[members] == name]
            held[in_group] = True
            taken += len(in_group)
    return held


def train_relevance(
    images: np.ndarray,
    y: np.ndarray,
    params: dict,
    seed: int | None = None,
    groups: np.ndarray | None = None,
    progress: bool = True,
) -> tuple[RelevanceNet, dict]:
    """Train on images with y in {0, 1}, hold out `holdout` of them, report how it did.

    `images` (n, S, S, 3) uint8; `y` (n,) with 1 relevant, 0 irrelevant, -1 unknown
    (unknown images are ignored here; score them afterwards). `seed` overrides
    params["seed"]; `groups` (n,), optional, keeps a group on one side of the holdout.
    Returns the model (eval mode, `model.params` = the params used) and a report.
    """
    cfg = dict(params)
    if not 0 <= cfg["holdout"] < 1:
        raise ValueError(f"relevance: holdout must be in [0, 1), got {cfg['holdout']}")
    if seed is not None:
        cfg["seed"] = int(seed)
    y = np.asarray(y)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) != len(y):
        raise ValueError(f"relevance: need (n, S, S, 3) uint8 images and n labels, got {images.shape} {images.dtype} and {y.shape}")
    n_relevant, n_irrelevant = int((y == 1).sum()), int((y == 0).sum())
    if n_irrelevant == 0:
        raise ValueError(f"relevance: no labelled irrelevant images (and {n_relevant} relevant); cannot train a classifier")
    if n_relevant == 0:
        raise ValueError(f"relevance: no labelled relevant images (and {n_irrelevant} irrelevant); cannot train a classifier")

    t0 = time.perf_counter()
    labelled = np.flatnonzero(y >= 0)
    held = holdout_mask(y[labelled], cfg["holdout"], cfg["seed"], None if groups is None else np.asarray(groups)[labelled])
    train_idx, held_idx = labelled[~held], labelled[held]
    # Read per batch, as uint8, normalised per batch: from a ShardReader nothing of the
    # split is held, so memory does not grow with the number of images.
    y_train = torch.from_numpy(y[train_idx].astype(np.float32))

    deterministic_before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True)
    try:
        # fork_rng: weight init uses the global RNG; the caller's stays as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg["seed"])
            model = RelevanceNet(cfg["width"])
        model.params = cfg
        gen = torch.Generator().manual_seed(cfg["seed"])
        # Balanced sampling: each draw picks a class with p = 1/2, then an image of it.
        # The few irrelevant images repeat, each time with a different augmentation.
        by_class = [torch.from_numpy(np.flatnonzero(y[train_idx] == c)) for c in (0, 1)]
        steps_per_epoch = math.ceil(len(train_idx) / cfg["batch_size"])
        total_steps = cfg["epochs"] * steps_per_epoch
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=WEIGHT_DECAY)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
        model.train()
        bar = tqdm(range(total_steps), desc="relevance: train", unit="batch", leave=False, disable=not progress)
        for _ in bar:
            cls = torch.rand(cfg["batch_size"], generator=gen) < 0.5  # True -> relevant
            pick = torch.where(
                cls,
                by_class[1][torch.randint(len(by_class[1]), (cfg["batch_size"],), generator=gen)],
                by_class[0][torch.randint(len(by_class[0]), (cfg["batch_size"],), generator=gen)],
            )
            x = augment(to_input(images[train_idx[pick.numpy()]]), gen)
            loss = F.binary_cross_entropy_with_logits(model(x), y_train[pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()
    finally:
        torch.use_deterministic_algorithms(deterministic_before[0], warn_only=deterministic_before[1])

    held_images = images.take(held_idx) if isinstance(images, ShardReader) else images[held_idx]
    report = evaluate(model, held_images, y[held_idx], cfg["threshold"])
    report.update(
        n_train_relevant=int((y[train_idx] == 1).sum()),
        n_train_irrelevant=int((y[train_idx] == 0).sum()),
        n_unknown=int((y < 0).sum()),
        holdout_by_group=groups is not None,
        train_seconds=round(time.perf_counter() - t0, 2),
    )
    return model, report


def evaluate(model: RelevanceNet, images: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """AUC, and precision/recall of flagging irrelevant images (relevance < threshold)."""
    y = np.asarray(y)
    n_rel, n_irr = int((y == 1).sum()), int((y == 0).sum())
    report = {"threshold": float(threshold), "n_holdout_relevant": n_rel, "n_holdout_irrelevant": n_irr}
    if n_rel == 0 or n_irr == 0:
        missing = "irrelevant" if n_irr == 0 else "relevant"
        return {**report, "auc": float("nan"), "precision": float("nan"), "recall": float("nan"),
                "n_flagged": 0, "note": f"held-out part has no {missing} images: not measured"}
    p = score(model, images)
    flagged = p < threshold
    true_flags = int((flagged & (y == 0)).sum())
    return {
        **report,
        "auc": roc_auc(y == 1, p),
        "precision": true_flags / int(flagged.sum()) if flagged.any() else float("nan"),
        "recall": true_flags / n_irr,
        "n_flagged": int(flagged.sum()),
        "note": "",
    }


@torch.no_grad()
def _batched(fn, model: RelevanceNet, images: np.ndarray, batch_size: int) -> np.ndarray:
    was_training = model.training
    model.eval()
    out = [fn(to_input(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0,), np.float32)


def score(model: RelevanceNet, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(n,) float32 relevance in [0, 1] (1 = flower) of (n, S, S, 3) uint8 images."""
    return _batched(lambda x: torch.sigmoid(model(x)), model, images, batch_size)


@torch.no_grad()
def score_and_embed(model: RelevanceNet, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """`score` (the same bits: the forward pass is head(features)) and the (n, FEATURE_DIM)
    float16 features it came from, in one pass: the embeddings map in the App
    (colorize/curation/review.py) places the images by them."""
    was_training = model.training
    model.eval()
    # Filled in place: lists of chunks and their concatenation held the features twice.
    scores = np.zeros((len(images),), np.float32)
    features = np.zeros((len(images), FEATURE_DIM), np.float16)
    for i in range(0, len(images), batch_size):
        f = model.features(to_input(images[i : i + batch_size]))
        scores[i : i + len(f)] = torch.sigmoid(model.head(f).squeeze(1)).numpy()
        features[i : i + len(f)] = f.half().numpy()
    model.train(was_training)
    return scores, features


def save(model: RelevanceNet, path, meta: dict | None = None) -> None:
    """Checkpoint: weights + params + `meta` (plain values only: numbers, strings, lists, dicts)."""
    state = {"model": model.state_dict(), "params": dict(model.params), "meta": dict(meta or {})}

    def write(tmp: Path) -> None:
        # A file object: given a path, torch names the archive's records after the file,
        # here the temporary with its pid, and the bytes differed from run to run.
        with open(tmp, "wb") as f:
            torch.save(state, f)

    atomic_write(path, write)


def load(path) -> tuple[RelevanceNet, dict]:
    """(model in eval mode with `model.params`, meta) from a checkpoint `save` wrote."""
    checkpoint = torch.load(path, weights_only=True)
    params = checkpoint["params"]
    model = RelevanceNet(params["width"])
    model.load_state_dict(checkpoint["model"])
    model.params = params
    return model.eval(), checkpoint["meta"]


# ----------------------------------------------------------------------------- the pipeline's labels

FLOWER_SOURCES = ("garden", "flowers102", "openimages", "folder")


def _matches(label: str, prefixes: list[str]) -> bool:
    return any(label == p or label.startswith(p.rstrip("/") + "/") for p in prefixes)


def weak_labels(manifest, decisions, negative_labels: list[str]) -> np.ndarray:
    """1 relevant, 0 irrelevant, -1 unknown, per manifest row, from what the data says.

    relevant: flower sources and labels (the garden's flowers, Flowers-102, Open Images
    flower classes, folder photos); irrelevant: Open Images negatives, the garden's
    planted non-flower photos, folder labels listed in data.folder.negative_labels,
    and images people rejected as `irrelevant` (people's `keep` and `hard` count as relevant).
    """
    y = np.full(len(manifest), -1, dtype=np.int64)
    src, label = manifest["source"].to_numpy(), manifest["label"].fillna("").to_numpy()
    negative = manifest["negative"].fillna(False).to_numpy().astype(bool) if "negative" in manifest else np.zeros(len(y), bool)
    y[np.isin(src, FLOWER_SOURCES)] = 1
    y[(src == "garden") & (label == "irrelevant")] = 0
    y[(src == "garden") & (label == "")] = -1  # files with no content to judge
    y[negative] = 0
    folder_negative = np.array([s == "folder" and _matches(l, negative_labels) for s, l in zip(src, label)])
    y[folder_negative] = 0
    if len(decisions):
        pos = {i: p for p, i in enumerate(manifest["id"])}
        for r in decisions.itertuples(index=False):
            if r.id in pos:
                if r.decision == "reject" and r.reason == "irrelevant":
                    y[pos[r.id]] = 0
                elif r.decision in ("keep", "hard"):
                    y[pos[r.id]] = 1
    return y


def fit(rows, images: np.ndarray, y: np.ndarray, cfg: dict) -> tuple[RelevanceNet, dict]:
    """Measure on a held-out part of the labels, then refit on all of them to deploy.

    The garden's planted photos are held out by source photo, so crops of one photo
    never sit on both sides (an honest AUC). The refit makes sure no known non-flower,
    nor a whole held-out source photo, goes unlearned in the model that scores.
    """
    planted = (rows["source"] == "garden").to_numpy() & (rows["label"] == "irrelevant").to_numpy()
    groups = np.where(planted, "photo:" + rows["defect_detail"].astype(str), rows["id"]).astype(str)
    _, report = train_relevance(images, y, cfg, groups=groups)
    model, _ = train_relevance(images, y, {**cfg, "holdout": 0.0})
    report["deployed"] = "refit on all labels after the held-out measurement"
    return model, report
