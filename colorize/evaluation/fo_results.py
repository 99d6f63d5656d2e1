"""The evaluation in the FiftyOne App: "show me the test images this model colours worst",
"the training images it finds hardest".

The evaluate stage writes onto the review dataset's samples (colorize/curation/review.py,
the same database rules as curation), matched by the manifest id `cid`:

- `evaluation` on each test image: an embedded document with the model's `psnr`,
  `ssim`, `delta_e` (mean CIEDE2000) and `colourfulness`, the truth's colourfulness,
  `gain` (PSNR over the strongest baseline, per image), `best_baseline`, `model` and
  `run_id`: the latest evaluation, which the saved views sort by;
- the same document in `evaluation_<model>_<run>` (`run_field`), kept from run to run, so
  several models' results sit side by side, keyed by their MLflow run;
- `split` (train/val/test) on every image that made it into the split, `train_loss`
  (the last loss training saw, reports/train_loss_table.csv) on the training images;
- `comparison`: gray | prediction | truth, one PNG per test image at the size the
  metrics were computed at, shown when a sample is opened (the dataset's
  `modal_media_field`). Other samples' `comparison` is their own file, so opening them
  shows the photo as before. Why a second media field rather than a grouped dataset
  (slices truth/gray/prediction): the review dataset is where people tag and prune, one
  sample per file; a grouped dataset would turn each image into a group of three
  samples, and every tag, view and decisions.csv row would have to say which slice it
  means. The grid keeps the originals; the modal puts the prediction beside the truth.

Saved views: `worst-test-first`, `best-test-first`, `test-per-class` (grouped by label,
worst first in each), `hardest-training-first`, `tagged-hard`.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from colorize.common.grid import comparison_rows, save_grid
from colorize.common.tracking import project_root

EVALUATION = "evaluation"  # the latest evaluation's per-sample document
COMPARISON = "comparison"  # the media field the sample modal shows
MEDIA = Path(".fiftyone/media/evaluation")  # the comparison PNGs (git-ignored, like the database)


def run_field(model: str, run_id: str | None) -> str:
    """`evaluation_<model>_<first 8 of the run id>`: one field per evaluated run."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{EVALUATION}_{model}_{(run_id or 'norun')[:8]}")


class ComparisonWriter:
    """Gray | prediction | truth per test image, as evaluate scores them (its per-chunk
    hook), written into a folder of their own; `commit()` then puts it in the place of
    the previous evaluation's `folder`, so a killed evaluate leaves the App's pictures
    as they were. `paths`: id -> where its picture is once committed."""

    def __init__(self, folder: Path = MEDIA):
        self.folder = project_root() / folder  # a queued experiment's too: the project's own App shows it
        self.writing = self.folder.with_name(f".{self.folder.name}.{os.getpid()}.tmp")
        for left in self.folder.parent.glob(f".{self.folder.name}.*.*"):  # a killed evaluate's
            if not _alive(left.name.split(".")[2]):
                shutil.rmtree(left, ignore_errors=True)
        self.writing.mkdir(parents=True)
        self.paths: dict[str, str] = {}

    def __call__(self, ids, L, ab, truth: np.ndarray) -> None:
        for cid, row in zip(ids, comparison_rows(L, ab, truth)):
            save_grid([row], self.writing / f"{cid}.png")
            self.paths[cid] = str(self.folder / f"{cid}.png")

    def commit(self) -> None:
        """Swap the new pictures in, under a lock: queued experiments may run evaluate side by side."""
        import fcntl

        old = self.folder.with_name(f".{self.folder.name}.{os.getpid()}.old")
        with open(self.folder.with_name(f".{self.folder.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.folder.exists():
                self.folder.rename(old)
            self.writing.rename(self.folder)
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def publish(per_image: pd.DataFrame, split: pd.DataFrame, losses: pd.DataFrame | None, comparisons: dict[str, str],
            model: str, run_id: str | None, best_baseline: str, name: str | None = None) -> dict:
    """Write one evaluation onto the review dataset (opened or rebuilt by
    `review.open_dataset`); returns what was written, for the stage's log.

    `per_image`: evaluate's table (id, psnr_model, ...); `split`: the split manifest's
    id and split; `losses`: train_loss_table.csv (id, loss) or None; `comparisons`:
    id -> PNG path (ComparisonWriter.paths)."""
    import fiftyone as fo

    from colorize.curation.review import open_dataset

    ds = open_dataset(name)
    cids = ds.values("cid")
    filepaths = ds.values("filepath")
    docs = {}
    for row in per_image.itertuples(index=False):
        docs[row.id] = {
            "psnr": float(row.psnr_model), "ssim": float(row.ssim_model), "delta_e": float(row.delta_e_model),
            "colourfulness": float(row.colourfulness_model), "colourfulness_truth": float(row.colourfulness_truth),
            "gain": float(row.psnr_model - getattr(row, f"psnr_{best_baseline}")),
            "best_baseline": best_baseline, "model": model, "run_id": run_id or "",
        }
    split_of = dict(zip(split["id"], split["split"]))
    loss_of = dict(zip(losses["id"], losses["loss"])) if losses is not None else {}

    def doc(cid):
        return fo.DynamicEmbeddedDocument(**docs[cid]) if cid in docs else None

    ds.set_values(EVALUATION, [doc(c) for c in cids])
    ds.set_values(run_field(model, run_id), [doc(c) for c in cids])
    ds.set_values("split", [split_of.get(c) for c in cids])
    ds.set_values("train_loss", [_finite(loss_of.get(c)) for c in cids])
    ds.set_values(COMPARISON, [comparisons.get(c, f) for c, f in zip(cids, filepaths)])
    ds.app_config.media_fields = ["filepath", COMPARISON]
    ds.app_config.modal_media_field = COMPARISON
    ds.app_config.media_fallback = True  # a sample mirrored later, without a comparison yet, shows its photo
    evaluations = dict(ds.info.get("evaluations", {}))
    evaluations[run_field(model, run_id)] = {
        "model": model, "run_id": run_id or "", "best_baseline": best_baseline, "n_test": len(per_image),
        "psnr": float(per_image["psnr_model"].mean()),
        "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    ds.info["evaluations"] = evaluations
    ds.save()
    save_views(ds)
    missing = sorted(set(docs) - set(cids))
    return {"dataset": ds.name, "test_samples": len(docs) - len(missing), "missing": missing,
            "field": run_field(model, run_id)}


def save_views(ds) -> None:
    from fiftyone import ViewField as F

    tested = ds.exists(EVALUATION)
    ds.save_view("worst-test-first", tested.sort_by(f"{EVALUATION}.psnr"), overwrite=True)
    ds.save_view("best-test-first", tested.sort_by(f"{EVALUATION}.psnr", reverse=True), overwrite=True)
    ds.save_view("test-per-class", tested.group_by("label", order_by=f"{EVALUATION}.psnr"), overwrite=True)
    ds.save_view("hardest-training-first", ds.match(F("train_loss") != None).sort_by("train_loss", reverse=True),  # noqa: E711
                 overwrite=True)
    ds.save_view("tagged-hard", ds.match_tags("hard"), overwrite=True)


def _finite(value):
    return float(value) if value is not None and np.isfinite(value) else None
