"""Model tests: a small U-Net trained on the garden must beat every trivial baseline,
and training is deterministic. Runs the real stage mains (and the training engine) in a
temp project directory."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from colorize.common import paths
from colorize.common.params import validate
from colorize.evaluation.evaluate import evaluate
from colorize.stages import curate, download, ingest, split
from colorize.stages import evaluate as evaluate_stage
from colorize.training import checkpoint
from colorize.training.engine import train
from colorize.training.loader import open_split
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def small_params(**train_overrides):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["garden"]["n_images"] = 400
    p["ingest"]["image_size"] = 32
    p["curate"]["min_side"] = 24
    p["train"].update({"epochs": 8, "width": 16, "depth": 2, "batch_size": 16, "crop": 24, **train_overrides})
    return validate(p)


def run_stages(workdir, params, monkeypatch):
    monkeypatch.chdir(workdir)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in (download, ingest, curate, split):
        stage.main()
    summary = train(params)
    evaluate_stage.main()
    return summary, json.loads(paths.METRICS.read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    work = tmp_path_factory.mktemp("model")
    try:
        yield work, *run_stages(work, small_params(), mp)
    finally:
        mp.undo()


def test_model_beats_every_trivial_baseline(trained):
    _, summary, metrics = trained
    best = max(metrics["psnr_gray"], metrics["psnr_const"], metrics["psnr_lookup"])
    # The garden's colour follows shape; a model that learned anything beats the
    # strongest per-pixel rule by a clear margin, not by noise.
    assert metrics["psnr"] > best + 1.0, metrics
    assert metrics["psnr_median"] > max(metrics["psnr_gray_median"], metrics["psnr_const_median"], metrics["psnr_lookup_median"])
    assert metrics["gain_over_best_baseline"] == pytest.approx(metrics["psnr"] - best)


def test_validation_psnr_matches_evaluate_code_path(trained, monkeypatch):
    """Training's validation PSNR and evaluate's PSNR are one computation: evaluate's
    code on the val split, with the saved model, gives the last epoch's val_psnr."""
    work, summary, _ = trained
    monkeypatch.chdir(work)
    history = paths.TRAIN_HISTORY.read_text().splitlines()
    assert len(history) == 1 + 8
    model, _ = checkpoint.load_model(paths.MODEL)
    on_val = evaluate(model, open_split("val"), open_split("train"), small_params()["evaluate"]).metrics
    assert on_val["n_test"] == len(open_split("val"))
    assert on_val["psnr"] == pytest.approx(summary["val_psnr"], abs=1e-4)


def test_checkpoint_is_safe_and_complete(trained):
    work, _, _ = trained
    ckpt = torch.load(work / "models" / "model.pt", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "epoch", "args"} <= set(ckpt)
    assert ckpt["epoch"] == 8 and ckpt["args"]["train"]["model"] == "unet"


def test_training_is_deterministic(trained, tmp_path, monkeypatch):
    import shutil

    work, summary, _ = trained
    copy = tmp_path / "copy"  # retrain in a copy: the other tests keep their model.pt
    shutil.copytree(work, copy, symlinks=True)
    monkeypatch.chdir(copy)
    first = torch.load(work / "models" / "model.pt", weights_only=True)["model"]
    params = small_params()
    again = train(params)
    second = torch.load(copy / "models" / "model.pt", weights_only=True)["model"]
    assert again["val_loss"] == summary["val_loss"]
    for k in first:
        assert torch.equal(first[k], second[k]), k


def test_no_leaks_across_splits(trained):
    import pandas as pd

    work, _, _ = trained
    df = pd.read_parquet(work / "data" / "split" / "manifest.parquet")
    assert df["id"].is_unique
    assert (df.groupby("sha256")["split"].nunique() == 1).all()  # no same bytes in two splits
    assert (df.groupby("group")["split"].nunique() == 1).all()
    report = json.loads((work / "reports" / "split.json").read_text())
    assert report["train"] + report["val"] + report["test"] == report["total"] == len(df)
