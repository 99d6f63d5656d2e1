"""Stage evaluate: the model against the three trivial baselines on the test split
(colorize/evaluation/evaluate.py).

Outputs:
- `reports/metrics.json` (DVC metrics): `psnr` (model mean), `psnr_gray`,
  `psnr_const`, `psnr_lookup` (baseline means) at the top level; the same for ssim,
  delta_e, colourfulness; for each, `_median` and a seeded bootstrap 95% CI of the mean
  (`_ci95_lo`, `_ci95_hi`); the strongest baseline, the model's gain over it and the
  paired CI of that gain (`gain_ci95_lo/hi`); the truth's colourfulness, the gap and
  `colourfulness_ratio` (the model's over the truth's: read it beside the PSNR gain).
- `reports/eval_per_image.csv`: one row per test image, every metric of every predictor.
- `reports/eval_per_class.csv`: means per label (class, folder label, garden species).
- `reports/psnr_hist.png` (DVC plot): per-image PSNR, model against strongest baseline.
- `reports/eval_best_median_worst.png` (DVC plot): the model's best, median and worst
  test images by PSNR, gray | prediction | truth.
- `reports/eval_grid.png` (DVC plot): gray | prediction | truth.
- `reports/temperature_sweep.csv` (DVC plot): PSNR and colourfulness against the
  annealed-mean temperature T (zhang), with the gray PSNR and the truth's colourfulness.
The same metrics go to the training's MLflow run, and the model is registered there as
`colorizer-<train.model>`: a pyfunc colorizer (colorize/serving.py) that
`mlflow models serve` can serve. With `evaluate.to_fiftyone` (default) every test
image's numbers and its prediction go onto its sample in the FiftyOne review dataset,
with saved views (worst test images first, hardest training images, per class:
colorize/evaluation/fo_results.py); `make review` shows them.
"""
# ruff: noqa: E402 (portable.pin() must run before numpy and torch are imported)
from __future__ import annotations

from colorize.common import portable

if __name__ == "__main__":
    portable.pin()  # before numpy and torch: the same metrics on any x86-64 CPU (docs/reproducibility.md)

import json

import numpy as np
import pandas as pd
import torch

from colorize import serving
from colorize.common import paths, tracking
from colorize.common.errors import run_main
from colorize.common.files import atomic_write, read_columns, write_json
from colorize.common.grid import comparison_rows, save_grid
from colorize.common.malloc import return_freed_memory
from colorize.common.params import load_params
from colorize.curation import fodb
from colorize.evaluation import fo_results
from colorize.evaluation.evaluate import (
    EVAL_CHUNK,
    best_median_worst,
    evaluate,
    per_class,
    psnr_histogram,
    temperature_sweep,
)
from colorize.training import checkpoint
from colorize.training.loader import open_split
from colorize.training.models import predict_ab

ARTIFACTS = (paths.METRICS, paths.EVAL_GRID, paths.SWEEP, paths.PER_IMAGE, paths.PER_CLASS, paths.HISTOGRAM,
             paths.EXTREMES)


def log_to_mlflow(run_id: str | None, metrics: dict, model_name: str) -> None:
    """The test metrics and the evaluation's files on the training's MLflow run, and the
    model registered as a servable pyfunc colorizer (`register`)."""
    mlflow = tracking.setup()
    numbers = {f"test_{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    try:
        run = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(tags=tracking.run_tags())
    except mlflow.exceptions.MlflowException as e:
        # The training run is gone (store deleted, or a different MLFLOW_TRACKING_URI):
        # log to a fresh run rather than losing the numbers.
        print(f"evaluate: training run {run_id} not found ({str(e).splitlines()[0]}); logging to a new run")
        run = mlflow.start_run(tags=tracking.run_tags({"orphan_eval": "true"}))
    with run:
        mlflow.log_metrics(numbers)
        mlflow.set_tag("best_baseline", metrics["best_baseline"])
        for path in ARTIFACTS:
            mlflow.log_artifact(str(path))
        register(mlflow, numbers, model_name)


def register(mlflow, numbers: dict, model_name: str) -> tuple[str, str]:
    """models/model.pt as a pyfunc colorizer in the active run, registered as
    `colorizer-<model>` with the test metrics; the version is tagged with what made it:
    the git commit, the DVC experiment, and DVC's hashes of the split and ingest data.
    Returns (registered name, version)."""
    gray = np.full((1, 32, 32, 3), 128, dtype=np.uint8)  # the input example: a gray photo
    name = serving.registered_name(model_name)
    info = serving.log_colorizer(mlflow, paths.MODEL, gray, name)
    mlflow.log_metrics(numbers, model_id=info.model_id)
    version = str(info.registered_model_version)
    tags = {k: v for k, v in tracking.run_tags().items() if k in ("git_commit", "dvc_exp_name", "reproduce")}
    tags |= {"data_split_hash": tracking.dvc_hash(paths.SPLIT), "data_ingest_hash": tracking.dvc_hash(paths.INGEST),
             "test_psnr": f"{numbers['test_psnr']:.4f}"}
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    print(f"evaluate: registered {name} version {version} (mlflow models serve -m models:/{name}/{version})")
    return name, version


def to_fiftyone(per_image, comparisons: dict, model_name: str, run_id: str | None, best: str) -> None:
    """Every test image's numbers and prediction onto its sample in the review dataset."""
    split = read_columns(paths.SPLIT_MANIFEST, ("id", "split"))
    losses = pd.read_csv(paths.LOSS_TABLE, usecols=["id", "loss"]) if paths.LOSS_TABLE.exists() else None
    with fodb.database():
        out = fo_results.publish(per_image, split, losses, comparisons, model_name, run_id, best)
    if out["missing"]:
        print(f"evaluate: warning: {len(out['missing'])} test image(s) are not in the FiftyOne dataset "
              f"{out['dataset']!r} (e.g. {out['missing'][0]}): run `dvc repro -f curate` to mirror them")
    print(f"evaluate: {out['test_samples']} test images' results in FiftyOne dataset {out['dataset']!r} "
          f"(field {out['field']}; views worst-test-first, hardest-training-first, ...: `make review`)")


def main() -> None:
    # One thread and deterministic kernels: metrics.json must be bit-identical for the
    # same model and data (a CI run once saw it differ between two forced repros with
    # identical inputs; with two threads the order of float reductions may vary).
    portable.configure_torch()
    return_freed_memory()  # flat peak memory as the splits grow (see colorize/common/malloc.py)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    cfg = load_params()["evaluate"]
    tracking.check_store()  # before any work: an unusable MLflow store fails now, in one line
    model, ckpt = checkpoint.load_model(paths.MODEL)
    train_params = ckpt["args"]["train"]
    test = open_split("test")  # streamed from the shards, as is the training split for the baselines
    comparisons = fo_results.ComparisonWriter() if cfg["to_fiftyone"] else None
    result = evaluate(model, test, open_split("train"), cfg, on_chunk=comparisons)
    m, per_image = result.metrics, result.per_image
    best = m["best_baseline"]
    atomic_write(paths.PER_CLASS, lambda tmp: per_class(per_image, best).to_csv(tmp, index=False, float_format="%.4f"))
    psnr_histogram(per_image, best, paths.HISTOGRAM)
    best_median_worst(per_image, test, model, cfg["grid_images"], paths.EXTREMES)
    atomic_write(paths.PER_IMAGE, lambda tmp: per_image.to_csv(tmp, index=False, float_format="%.4f"))
    write_json(paths.METRICS, m)
    sweep = temperature_sweep(model, test, cfg["temperatures"], m)
    atomic_write(paths.SWEEP, lambda tmp: sweep.to_csv(tmp, index=False, float_format="%.4f"))
    first = next(test.chunks(EVAL_CHUNK))  # predicted as in evaluate (the same batches), then cut
    n, (truth, lab) = cfg["grid_images"], test.rgb_and_lab(first)
    L = lab[..., 0]
    save_grid(comparison_rows(L[:n], predict_ab(model, L)[:n], truth[:n]), paths.EVAL_GRID)
    run_id = json.loads(paths.TRAIN_REPORT.read_text()).get("mlflow_run_id") if paths.TRAIN_REPORT.exists() else None
    log_to_mlflow(run_id, m, train_params["model"])
    if comparisons is not None:
        comparisons.commit()
        to_fiftyone(per_image, comparisons.paths, train_params["model"], run_id, best)
    print(f"evaluate: psnr {m['psnr']:.2f} dB | gray {m['psnr_gray']:.2f} | const {m['psnr_const']:.2f} | "
          f"lookup {m['psnr_lookup']:.2f} | gain over {best} {m['gain_over_best_baseline']:+.2f} dB")


if __name__ == "__main__":
    run_main(main)
