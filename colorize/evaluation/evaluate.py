"""Evaluation: the model against the three trivial baselines, per test image.

The prediction is always the image's own L plus the predicted ab. Per image, on 8-bit
sRGB (metrics.py, the same code as training's validation): PSNR (with the
perfect-image rule), SSIM, mean CIEDE2000 (delta_e) and colourfulness, for the model
and for gray, const and lookup (baselines.py); the model is read against the strongest
baseline by PSNR, with a paired bootstrap CI of its gain.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from colorize.common.colour import compose
from colorize.common.grid import save_grid
from colorize.evaluation.baselines import BASELINES, Baselines
from colorize.evaluation.metrics import (
    bootstrap_ci,
    colourfulness,
    delta_e_uint8,
    is_perfect,
    psnr_uint8,
    ssim_uint8,
)
from colorize.training.loader import StreamedSplit
from colorize.training.models import predict_ab

EVAL_CHUNK = 256  # test images at a time: a multiple of predict_ab's (64) and the metrics' (256) batches,
#                   so every number is the same bits as with the whole split at once


@dataclass
class Evaluation:
    metrics: dict  # metrics.json: means, medians, CIs; the strongest baseline and the gain
    per_image: pd.DataFrame  # every metric of every predictor, one row per test image


def evaluate(model: torch.nn.Module, test: StreamedSplit, train: StreamedSplit, cfg: dict,
             on_chunk=None) -> Evaluation:
    """The model and the baselines (fitted on the training split) on `test`, both read
    from the shards a chunk at a time (memory flat in the splits' sizes); `cfg` is
    params.yaml's `evaluate` section. `on_chunk(ids, L, ab, truth)`, if given, sees each
    chunk's model prediction (fo_results.ComparisonWriter keeps them for the App)."""
    baselines = Baselines.fit_streamed(lambda: (train.lab(idx) for idx in train.chunks(EVAL_CHUNK)),
                                       cfg["lookup_bins"])
    names = ("model", *BASELINES)
    scores: dict[str, dict[str, list]] = {name: {m: [] for m in (*METRICS, "perfect")} for name in names}
    truth_colour = []
    for idx in test.chunks(EVAL_CHUNK):
        truth, lab = test.rgb_and_lab(idx)
        L = lab[..., 0]
        predictions = {"model": predict_ab(model, L), **{name: baselines.predict(name, L) for name in BASELINES}}
        if on_chunk is not None:
            on_chunk(test.rows["id"].to_numpy()[idx], L, predictions["model"], truth)
        for name, ab in predictions.items():
            rgb = compose(L, ab)
            for metric, values in _scores(rgb, truth).items():
                scores[name][metric].append(values)
            scores[name]["perfect"].append(is_perfect(rgb, truth))
        truth_colour.append(colourfulness(truth))
    per_image = test.rows[["id", "source", "relpath", "label"]].copy()
    metrics: dict = {}
    for name in names:
        for metric in METRICS:
            values = np.concatenate(scores[name][metric])
            per_image[f"{metric}_{name}"] = values
            key = metric if name == "model" else f"{metric}_{name}"
            metrics[key] = float(values.mean())
            metrics[f"{key}_median"] = float(np.median(values))
            metrics[f"{key}_ci95_lo"], metrics[f"{key}_ci95_hi"] = bootstrap_ci(
                values, n_resamples=cfg["bootstrap_resamples"], seed=cfg["bootstrap_seed"])
        metrics[f"n_perfect_{name}"] = int(np.concatenate(scores[name]["perfect"]).sum())
    truth_colour = np.concatenate(truth_colour)
    per_image["colourfulness_truth"] = truth_colour
    metrics["colourfulness_truth"] = float(truth_colour.mean())
    metrics["colourfulness_gap"] = metrics["colourfulness"] - metrics["colourfulness_truth"]
    # Read next to the PSNR gain: PSNR alone rewards sepia, colourfulness alone noise.
    metrics["colourfulness_ratio"] = (metrics["colourfulness"] / metrics["colourfulness_truth"]
                                      if metrics["colourfulness_truth"] > 0 else None)
    best = max(BASELINES, key=lambda b: metrics[f"psnr_{b}"])
    metrics["best_baseline"] = best
    metrics["psnr_best_baseline"] = metrics[f"psnr_{best}"]
    metrics["gain_over_best_baseline"] = metrics["psnr"] - metrics[f"psnr_{best}"]
    # Is the gain real? The CI of the per-image difference, paired on the same images.
    metrics["gain_ci95_lo"], metrics["gain_ci95_hi"] = bootstrap_ci(
        per_image["psnr_model"] - per_image[f"psnr_{best}"], n_resamples=cfg["bootstrap_resamples"],
        seed=cfg["bootstrap_seed"])
    metrics["n_test"] = len(test.rows)

    return Evaluation(metrics, per_image)


METRICS = ("psnr", "ssim", "delta_e", "colourfulness")


def _scores(rgb: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    return {"psnr": psnr_uint8(rgb, truth), "ssim": ssim_uint8(rgb, truth), "delta_e": delta_e_uint8(rgb, truth),
            "colourfulness": colourfulness(rgb)}


def per_class(per_image: pd.DataFrame, best: str) -> pd.DataFrame:
    """Mean metrics per label (Flowers-102 class, folder label, garden species), with the
    strongest baseline beside the model; unlabelled images form the class ''."""
    rows = []
    for label, part in per_image.groupby(per_image["label"].fillna("").astype(str), sort=True):
        rows.append({"label": label, "n": len(part),
                     "psnr": part["psnr_model"].mean(), f"psnr_{best}": part[f"psnr_{best}"].mean(),
                     "gain": (part["psnr_model"] - part[f"psnr_{best}"]).mean(),
                     "ssim": part["ssim_model"].mean(), "delta_e": part["delta_e_model"].mean(),
                     "colourfulness": part["colourfulness_model"].mean(),
                     "colourfulness_truth": part["colourfulness_truth"].mean()})
    return pd.DataFrame(rows)


def psnr_histogram(per_image: pd.DataFrame, best: str, path: Path) -> None:
    """Per-image PSNR of the model against the strongest baseline, as one PNG (DVC plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    lo = float(min(per_image["psnr_model"].min(), per_image[f"psnr_{best}"].min()))
    hi = float(max(per_image["psnr_model"].max(), per_image[f"psnr_{best}"].max()))
    bins = np.linspace(np.floor(lo), np.ceil(hi), 30)
    ax.hist(per_image[f"psnr_{best}"], bins=bins, alpha=0.6, label=f"{best} baseline")
    ax.hist(per_image["psnr_model"], bins=bins, alpha=0.6, label="model")
    ax.set_xlabel("PSNR per test image (dB)")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version stamp: same inputs, same bytes
    plt.close(fig)


def best_median_worst(per_image: pd.DataFrame, test: StreamedSplit, model: torch.nn.Module, n: int,
                      path: Path) -> None:
    """gray | prediction | truth rows for the model's best, median and worst images by
    PSNR (n of each, at most a third of the test split each)."""
    order = np.argsort(-per_image["psnr_model"].to_numpy(), kind="stable")
    k = max(1, min(n, len(order) // 3))
    mid = len(order) // 2 - k // 2
    picks = np.concatenate([order[:k], order[mid : mid + k], order[-k:]])
    truth, lab = test.rgb_and_lab(picks)
    L = lab[..., 0]
    gray = compose(L, torch.zeros(*L.shape, 2))
    model_rgb = compose(L, predict_ab(model, L))
    save_grid(list(zip(gray, model_rgb, truth)), path)


def temperature_sweep(model: torch.nn.Module, test: StreamedSplit, temperatures: list[float],
                      metrics: dict) -> pd.DataFrame:
    """PSNR and colourfulness of the model's decoding at each annealed-mean temperature
    (zhang), next to the gray baseline's PSNR and the truth's colourfulness as reference
    lines: vivid (T -> 0, the mode) against safe (T = 1, the mean). A regression model
    has no temperature; its rows repeat its one prediction, a flat line to compare with."""
    rows = []
    has_t = hasattr(model, "temperature")
    chosen = getattr(model, "temperature", None)
    for t in temperatures:
        if has_t:
            model.temperature = t
            psnr, colour = [], []
            for idx in test.chunks(EVAL_CHUNK):
                truth, lab = test.rgb_and_lab(idx)
                L = lab[..., 0]
                rgb = compose(L, predict_ab(model, L))
                psnr.append(psnr_uint8(rgb, truth))
                colour.append(colourfulness(rgb))
            psnr, colour = float(np.concatenate(psnr).mean()), float(np.concatenate(colour).mean())
        else:
            psnr, colour = metrics["psnr"], metrics["colourfulness"]
        rows.append({"temperature": t, "psnr": psnr, "psnr_gray": metrics["psnr_gray"],
                     "colourfulness": colour, "colourfulness_truth": metrics["colourfulness_truth"]})
    if has_t:
        model.temperature = chosen
    return pd.DataFrame(rows)
