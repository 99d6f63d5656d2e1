"""Stage 6, evaluate: the model against the three trivial baselines on the test split.

The prediction is always the image's own L plus the predicted ab, scored as per-image
PSNR on 8-bit sRGB (see metrics.py, including the perfect-image rule). Each number is
reported next to the same number for gray, const and lookup (baselines.py), and the
model is read against the strongest of them.

Outputs:
- `reports/metrics.json` (DVC metrics): `psnr` (model mean), `psnr_gray`,
  `psnr_const`, `psnr_lookup` (baseline means) at the top level, plus medians, the
  strongest baseline and the model's gain over it.
- `reports/eval_per_image.csv`: one row per test image.
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

from pipeline import tracking
from pipeline.baselines import BASELINES, Baselines
from pipeline.colour import compose
from pipeline.data import load_split
from pipeline.errors import UserError, run_main
from pipeline.grid import save_grid
from pipeline.metrics import colourfulness, is_perfect, psnr_uint8
from pipeline.models import build_model, checkpoint_priors, predict_ab
from pipeline.params import load_params, validate
from pipeline.train import MODEL_PATH, REPORT as TRAIN_REPORT, grid_rows

METRICS = Path("reports/metrics.json")
SWEEP = Path("reports/temperature_sweep.csv")
PER_IMAGE = Path("reports/eval_per_image.csv")
GRID = Path("reports/eval_grid.png")


def load_model(path: Path = MODEL_PATH) -> tuple[torch.nn.Module, dict]:
    if not path.exists():
        raise UserError(f"{path} not found: run the train stage first (dvc repro train)")
    # weights_only: a checkpoint is data, never code to execute.
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    params = validate(ckpt["params"])  # a checkpoint's params are checked like params.yaml
    model = build_model(params["train"], checkpoint_priors(ckpt["model"]), load_weights=False)  # the checkpoint has them
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def evaluate(params: dict) -> dict:
    cfg = params["evaluate"]
    model, ckpt = load_model()
    test = load_split("test")
    baselines = Baselines.fit(load_split("train").lab, cfg["lookup_bins"])

    predictions = {"model": predict_ab(model, test.L)}
    predictions.update({name: baselines.predict(name, test.L) for name in BASELINES})
    per_image = test.rows[["id", "source", "relpath", "label"]].copy()
    metrics: dict = {}
    for name, ab in predictions.items():
        rgb = compose(test.L, ab)
        psnr = psnr_uint8(rgb, test.rgb)
        per_image[f"psnr_{name}"] = psnr
        key = "psnr" if name == "model" else f"psnr_{name}"
        metrics[key] = float(psnr.mean())
        metrics[f"{key}_median"] = float(np.median(psnr))
        metrics[f"n_perfect_{name}"] = int(is_perfect(rgb, test.rgb).sum())
        colour = colourfulness(rgb)
        per_image[f"colourfulness_{name}"] = colour
        metrics["colourfulness" if name == "model" else f"colourfulness_{name}"] = float(colour.mean())
    truth_colour = colourfulness(test.rgb)
    per_image["colourfulness_truth"] = truth_colour
    metrics["colourfulness_truth"] = float(truth_colour.mean())
    best = max(BASELINES, key=lambda b: metrics[f"psnr_{b}"])
    metrics["best_baseline"] = best
    metrics["psnr_best_baseline"] = metrics[f"psnr_{best}"]
    metrics["gain_over_best_baseline"] = metrics["psnr"] - metrics[f"psnr_{best}"]
    metrics["n_test"] = len(test.rows)

    PER_IMAGE.parent.mkdir(exist_ok=True)
    per_image.to_csv(PER_IMAGE, index=False, float_format="%.4f")
    METRICS.write_text(json.dumps(metrics, indent=2) + "\n")
    temperature_sweep(model, test, cfg["temperatures"], metrics).to_csv(SWEEP, index=False, float_format="%.4f")
    n = min(cfg["grid_images"], len(test.L))
    save_grid(grid_rows(test.L[:n], predictions["model"][:n], test.rgb[:n]), GRID)
    run_id = json.loads(TRAIN_REPORT.read_text()).get("mlflow_run_id") if TRAIN_REPORT.exists() else None
    _log_to_mlflow(run_id, metrics)
    return metrics


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
    numbers = {f"test_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
    try:
        with mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(tags=tracking.run_tags()):
            mlflow.log_metrics(numbers)
            mlflow.set_tag("best_baseline", metrics["best_baseline"])
            mlflow.log_artifact(str(METRICS))
            mlflow.log_artifact(str(GRID))
            mlflow.log_artifact(str(SWEEP))
    except mlflow.exceptions.MlflowException as e:
        # The training run is gone (store deleted, or a different MLFLOW_TRACKING_URI):
        # log to a fresh run rather than losing the numbers.
        print(f"evaluate: training run {run_id} not found ({str(e).splitlines()[0]}); logging to a new run")
        with mlflow.start_run(tags=tracking.run_tags({"orphan_eval": "true"})):
            mlflow.log_metrics(numbers)
            mlflow.log_artifact(str(METRICS))


def main() -> None:
    m = evaluate(load_params())
    print(
        f"evaluate: psnr {m['psnr']:.2f} dB | gray {m['psnr_gray']:.2f} | const {m['psnr_const']:.2f} | "
        f"lookup {m['psnr_lookup']:.2f} | gain over {m['best_baseline']} {m['gain_over_best_baseline']:+.2f} dB"
    )


if __name__ == "__main__":
    run_main(main)
