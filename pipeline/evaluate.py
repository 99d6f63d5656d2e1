"""Stage 6, evaluate: the model against the three trivial baselines on the test split.

The prediction is always the image's own L plus the predicted ab. Per image, on 8-bit
sRGB (metrics.py, the same code as training's validation): PSNR (with the
perfect-image rule), SSIM, mean CIEDE2000 (delta_e) and colourfulness, for the model
and for gray, const and lookup (baselines.py); the model is read against the strongest
baseline by PSNR.

Outputs:
- `reports/metrics.json` (DVC metrics): `psnr` (model mean), `psnr_gray`,
  `psnr_const`, `psnr_lookup` (baseline means) at the top level; the same for ssim,
  delta_e, colourfulness; for each, `_median` and a seeded bootstrap 95% CI of the mean
  (`_ci95_lo`, `_ci95_hi`); the strongest baseline, the model's gain over it and the
  paired CI of that gain (`gain_ci95_lo/hi`); the truth's colourfulness and the gap.
- `reports/eval_per_image.csv`: one row per test image, every metric of every predictor.
- `reports/eval_per_class.csv`: means per label (class, folder label, garden species).
- `reports/psnr_hist.png` (DVC plot): per-image PSNR, model against strongest baseline.
- `reports/eval_best_median_worst.png` (DVC plot): the model's best, median and worst
  test images by PSNR, gray | prediction | truth.
- `reports/eval_grid.png` (DVC plot): gray | prediction | truth.
- `reports/temperature_sweep.csv` (DVC plot): PSNR and colourfulness against the
  annealed-mean temperature T (zhang), with the gray PSNR and the truth's colourfulness.
The same metrics go to the training's MLflow run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import checkpoint, tracking
from pipeline.baselines import BASELINES, Baselines
from pipeline.colour import compose
from pipeline.data import load_split
from pipeline.errors import run_main
from pipeline.grid import save_grid
from pipeline.metrics import bootstrap_ci, colourfulness, delta_e_uint8, is_perfect, psnr_uint8, ssim_uint8
from pipeline.models import predict_ab
from pipeline.params import load_params
from pipeline.train import MODEL_PATH, REPORT as TRAIN_REPORT, grid_rows

METRICS = Path("reports/metrics.json")
SWEEP = Path("reports/temperature_sweep.csv")
PER_CLASS = Path("reports/eval_per_class.csv")
HISTOGRAM = Path("reports/psnr_hist.png")
EXTREMES = Path("reports/eval_best_median_worst.png")
PER_IMAGE = Path("reports/eval_per_image.csv")
GRID = Path("reports/eval_grid.png")


def load_model(path: Path = MODEL_PATH) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, checkpoint) through the one safe loader, pipeline.checkpoint."""
    return checkpoint.load_model(path)


def evaluate(params: dict) -> dict:
    cfg = params["evaluate"]
    model, ckpt = load_model()
    test = load_split("test")
    baselines = Baselines.fit(load_split("train").lab, cfg["lookup_bins"])

    predictions = {"model": predict_ab(model, test.L)}
    predictions.update({name: baselines.predict(name, test.L) for name in BASELINES})
    per_image = test.rows[["id", "source", "relpath", "label"]].copy()
    metrics: dict = {}
    rgbs = {}
    for name, ab in predictions.items():
        rgb = rgbs[name] = compose(test.L, ab)
        scores = {
            "psnr": psnr_uint8(rgb, test.rgb),
            "ssim": ssim_uint8(rgb, test.rgb),
            "delta_e": delta_e_uint8(rgb, test.rgb),
            "colourfulness": colourfulness(rgb),
        }
        for metric, values in scores.items():
            per_image[f"{metric}_{name}"] = values
            key = metric if name == "model" else f"{metric}_{name}"
            metrics[key] = float(values.mean())
            metrics[f"{key}_median"] = float(np.median(values))
            metrics[f"{key}_ci95_lo"], metrics[f"{key}_ci95_hi"] = bootstrap_ci(
                values, n_resamples=cfg["bootstrap_resamples"], seed=cfg["bootstrap_seed"])
        metrics[f"n_perfect_{name}"] = int(is_perfect(rgb, test.rgb).sum())
    truth_colour = colourfulness(test.rgb)
    per_image["colourfulness_truth"] = truth_colour
    metrics["colourfulness_truth"] = float(truth_colour.mean())
    metrics["colourfulness_gap"] = metrics["colourfulness"] - metrics["colourfulness_truth"]
    best = max(BASELINES, key=lambda b: metrics[f"psnr_{b}"])
    metrics["best_baseline"] = best
    metrics["psnr_best_baseline"] = metrics[f"psnr_{best}"]
    metrics["gain_over_best_baseline"] = metrics["psnr"] - metrics[f"psnr_{best}"]
    # Is the gain real? The CI of the per-image difference, paired on the same images.
    metrics["gain_ci95_lo"], metrics["gain_ci95_hi"] = bootstrap_ci(
        per_image["psnr_model"] - per_image[f"psnr_{best}"], n_resamples=cfg["bootstrap_resamples"],
        seed=cfg["bootstrap_seed"])
    metrics["n_test"] = len(test.rows)

    per_class(per_image, best).to_csv(PER_CLASS, index=False, float_format="%.4f")
    psnr_histogram(per_image, best, HISTOGRAM)
    best_median_worst(per_image, test, rgbs["model"], cfg["grid_images"], EXTREMES)
    PER_IMAGE.parent.mkdir(exist_ok=True)
    per_image.to_csv(PER_IMAGE, index=False, float_format="%.4f")
    METRICS.write_text(json.dumps(metrics, indent=2) + "\n")
    temperature_sweep(model, test, cfg["temperatures"], metrics).to_csv(SWEEP, index=False, float_format="%.4f")
    n = min(cfg["grid_images"], len(test.L))
    save_grid(grid_rows(test.L[:n], predictions["model"][:n], test.rgb[:n]), GRID)
    run_id = json.loads(TRAIN_REPORT.read_text()).get("mlflow_run_id") if TRAIN_REPORT.exists() else None
    _log_to_mlflow(run_id, metrics)
    return metrics


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


def best_median_worst(per_image: pd.DataFrame, test, model_rgb: np.ndarray, n: int, path: Path) -> None:
    """gray | prediction | truth rows for the model's best, median and worst images by
    PSNR (n of each, at most a third of the test split each)."""
    order = np.argsort(-per_image["psnr_model"].to_numpy(), kind="stable")
    k = max(1, min(n, len(order) // 3))
    mid = len(order) // 2 - k // 2
    picks = np.concatenate([order[:k], order[mid : mid + k], order[-k:]])
    gray = compose(test.L[picks], torch.zeros(len(picks), *test.L.shape[1:], 2))
    save_grid([(gray[i], model_rgb[p], test.rgb[p]) for i, p in enumerate(picks)], path)


def temperature_sweep(model: torch.nn.Module, test, temperatures: list[float], metrics: dict) -> pd.DataFrame:
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
            rgb = compose(test.L, predict_ab(model, test.L))
            psnr, colour = float(psnr_uint8(rgb, test.rgb).mean()), float(colourfulness(rgb).mean())
        else:
            psnr, colour = metrics["psnr"], metrics["colourfulness"]
        rows.append({"temperature": t, "psnr": psnr, "psnr_gray": metrics["psnr_gray"],
                     "colourfulness": colour, "colourfulness_truth": metrics["colourfulness_truth"]})
    if has_t:
        model.temperature = chosen
    return pd.DataFrame(rows)


def _log_to_mlflow(run_id: str | None, metrics: dict) -> None:
    mlflow = tracking.setup()
    numbers = {f"test_{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    try:
        with mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(tags=tracking.run_tags()):
            mlflow.log_metrics(numbers)
            mlflow.set_tag("best_baseline", metrics["best_baseline"])
            mlflow.log_artifact(str(METRICS))
            mlflow.log_artifact(str(GRID))
            for path in (SWEEP, PER_IMAGE, PER_CLASS, HISTOGRAM, EXTREMES):
                mlflow.log_artifact(str(path))
    except mlflow.exceptions.MlflowException as e:
        # The training run is gone (store deleted, or a different MLFLOW_TRACKING_URI):
        # log to a fresh run rather than losing the numbers.
        print(f"evaluate: training run {run_id} not found ({str(e).splitlines()[0]}); logging to a new run")
        with mlflow.start_run(tags=tracking.run_tags({"orphan_eval": "true"})):
            mlflow.log_metrics(numbers)
            mlflow.log_artifact(str(METRICS))


def main() -> None:
    # One thread and deterministic kernels: metrics.json must be bit-identical for the
    # same model and data (a CI run once saw it differ between two forced repros with
    # identical inputs; with two threads the order of float reductions may vary).
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    params = load_params()
    tracking.check_store()  # before any work: an unusable MLflow store fails now, in one line
    m = evaluate(params)
    print(
        f"evaluate: psnr {m['psnr']:.2f} dB | gray {m['psnr_gray']:.2f} | const {m['psnr_const']:.2f} | "
        f"lookup {m['psnr_lookup']:.2f} | gain over {m['best_baseline']} {m['gain_over_best_baseline']:+.2f} dB"
    )


if __name__ == "__main__":
    run_main(main)
