"""Human review in the FiftyOne App, with every decision kept in git.

The curate stage mirrors the curated manifest into a persistent FiftyOne dataset
(`sync_dataset`): one sample per file found, every check's score as a field, a
`flag:<check>` tag per flag, and saved views to review. People then tag samples in
the App:

- `reject` plus a reason tag `reason:<why>` (e.g. `reason:irrelevant`), or the
  shorthand `reject:<why>`;
- `keep`, to overrule an automatic drop.

`export_decisions` writes those tags to `data/curation/decisions.csv`
(id, decision, reason, time): on leaving `make review` (Ctrl-C, `kill`, or closing the
terminal), and with `colorize-review sync` (`make sync`). The file is tracked in git and is a
dependency of curate, so `dvc repro` reapplies every decision, even after the database is
deleted; and `review` itself rebuilds a lost dataset from curate's outputs (the curated
manifest and decisions.csv). The commands are in colorize/cli/review.py.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from colorize.common import paths
from colorize.common.errors import UserError
from colorize.common.tracking import project_root
from colorize.curation.decisions import (
    DECISION_COLUMNS,
    decision_to_tags,
    is_human_tag,
    read_decisions,
    tags_to_decision,
    write_decisions,
)

DATASET = "colorize"  # on the project's own mongod (one per clone); see dataset_name()
FLAG_PREFIX = "flag:"
MIRROR_BLOCK = 2048  # samples built and added at a time (bounded memory at 100k files)
MAP_KEY = "relevance_map"  # the brain run of the embeddings map (the App's Embeddings panel)
MAP_POINTS = 10_000  # t-SNE places at most this many images (a seeded sample above): ~1 min here
# Fields mirrored from the curated manifest into each sample (when present), besides every
# check's score (checks.SCORE_COLUMNS): what a reviewer filters and sorts by in the App.
MANIFEST_FIELDS = (
    "cid", "source", "relpath", "label", "status", "keep", "reason", "auto_reason", "detail",
    "defect", "negative", "duplicate_of", "near_dup_group", "relevance",
)


def review_fields() -> tuple[str, ...]:
    from colorize.curation.checks import (
        SCORE_COLUMNS,  # here: checks brings torch, the App's CLI needs none
    )

    return MANIFEST_FIELDS + SCORE_COLUMNS


# ----------------------------------------------------------------------------- FiftyOne dataset


def dataset_name() -> str:
    """The review dataset's name.

    On the project's own mongod (one per clone) it is `colorize`. On a shared database
    (`FIFTYONE_DATABASE_URI` set by the user) clones and branches meet, so it is
    `colorize-<project>-<branch>`: the project is named by its git remote `origin` (the
    same for every clone of it), else by its folder, and the branch is the checked-out
    one. Two clones on one branch review one dataset; another branch or project gets its
    own. `COLORIZE_DATASET` overrides both (a name of your choosing).
    """
    from colorize.curation import fodb

    if os.environ.get("COLORIZE_DATASET"):
        return os.environ["COLORIZE_DATASET"]
    if not fodb.shared():
        return DATASET
    root = project_root()
    origin = _git(root, "config", "--get", "remote.origin.url")
    project = Path(origin.rstrip("/")).name.removesuffix(".git") if origin else root.name
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD") or "no-branch"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{DATASET}-{project}-{branch}")


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def _absolute(path: str) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else (project_root() / p).resolve())


def sync_dataset(curated: pd.DataFrame, decisions: pd.DataFrame, name: str | None = None, flag_columns=()):
    """Create or refresh the persistent dataset; only new or changed samples are written.

    `flag_columns` are boolean columns (`flag_tinted` or `tinted`); each True becomes
    a `flag:tinted` tag, and each gets a saved view of what it flagged.
    """
    import fiftyone as fo
    import fiftyone.core.media as fom

    name = name or dataset_name()
    ds = fo.load_dataset(name) if fo.dataset_exists(name) else fo.Dataset(name, persistent=True)
    # The columns mirrored, not every column of the manifest (copy-on-write: no copy yet).
    keep = ["id", "path", *flag_columns, *(f for f in review_fields() if f in curated.columns and f != "cid")]
    df = curated[list(dict.fromkeys(keep))].rename(columns={"id": "cid"})
    # An image dataset holds only files FiftyOne takes for images by their name: the
    # first sample fixes the dataset's media type, so a README.md or a .mov in a photo
    # folder would make every photo after it "not match". Such files are still in the
    # curated manifest, dropped as unreadable; the App just cannot show them.
    is_image = df["path"].map(lambda p: fom.get_media_type(str(p)) == fom.IMAGE)
    if not is_image.all():
        print(f"review: {int((~is_image).sum())} file(s) not named as images (e.g. "
              f"{Path(df.loc[~is_image, 'path'].iloc[0]).name}) are left out of the FiftyOne dataset")
        df = df[is_image]
    fields = [f for f in review_fields() if f in df.columns]
    existing = dict(zip(ds.values("cid"), ds.values("id"))) if len(ds) else {}
    if existing:  # a set of every id only when there are samples to compare with
        wanted = set(df["cid"])
        gone = [sid for cid, sid in existing.items() if cid not in wanted]
        if gone:
            ds.delete_samples(gone)

    human = {r.id: decision_to_tags(r.decision, r.reason) for r in decisions.itertuples(index=False)}
    new_rows = np.flatnonzero(~df["cid"].isin(existing).to_numpy())
    # A block of samples at a time: Sample objects of every row at once held ~16 kB an
    # image until the end (190 MB at 12,000 images), the peak of the whole curate stage.
    # The block's rows are taken by position: a table of the new rows would copy them all.
    for start in range(0, len(new_rows), MIRROR_BLOCK):
        samples = []
        for row in df.iloc[new_rows[start:start + MIRROR_BLOCK]].to_dict("records"):
            flags = [FLAG_PREFIX + c.removeprefix("flag_") for c in flag_columns if row.get(c)]
            s = fo.Sample(filepath=_absolute(row["path"]), tags=flags + human.get(row["cid"], []))
            for f in fields:
                s[f] = _clean(row[f])
            samples.append(s)
        ds.add_samples(samples, progress=False)

    # Changed fields and flag tags of samples that were already there, in bulk.
    old = df[df["cid"].isin(existing)]
    unsynced = 0
    if len(old):
        view = ds.select_by("cid", list(old["cid"]))
        current = dict(zip(view.values("cid"), view.values("tags")))
        schema = ds.get_field_schema()
        for f in fields:
            values = dict(zip(old["cid"], (_clean(v) for v in old[f])))
            # A field whose values were all missing so far (relevance before the classifier
            # ran) is not in the schema yet: nothing to compare with; set_values declares it.
            have = dict(zip(view.values("cid"), view.values(f))) if f in schema else {}
            changed = {c: v for c, v in values.items() if have.get(c) != v}
            if changed:
                view.select_by("cid", list(changed)).set_values(f, changed, key_field="cid")
        new_tags = {}
        for row in old.to_dict("records"):
            tags = current[row["cid"]]
            mine = [t for t in tags if is_human_tag(t)]
            if row["cid"] in human and not mine:
                mine = human[row["cid"]]  # the database lost them (or never had them): restore
            elif row["cid"] in human and tags_to_decision(mine) != tags_to_decision(human[row["cid"]]):
                unsynced += 1  # newer decisions in the App: keep them, they are exported on sync
            elif row["cid"] not in human and mine:
                unsynced += 1
            others = [t for t in tags if not t.startswith(FLAG_PREFIX) and not is_human_tag(t)]  # a reviewer's own
            tags_now = [FLAG_PREFIX + c.removeprefix("flag_") for c in flag_columns if row.get(c)] + mine + others
            if sorted(tags_now) != sorted(tags):
                new_tags[row["cid"]] = tags_now
        if new_tags:
            ds.select_by("cid", list(new_tags)).set_values("tags", new_tags, key_field="cid")
    if unsynced:
        warnings.warn(
            f"{unsynced} sample(s) have App decisions not in {paths.DECISIONS}: run `colorize-review sync` (`make sync`) "
            f"to keep them (curate used the file)",
            stacklevel=2,
        )
    save_views(ds, [c.removeprefix("flag_") for c in flag_columns])
    return ds


def save_views(ds, flag_columns) -> None:
    """The views reviewers start from: one per check, relevance, near duplicates, kept set."""
    from fiftyone import ViewField as F

    for check in flag_columns:
        ds.save_view(f"flagged-{check.replace('_', '-')}", ds.match_tags(FLAG_PREFIX + check), overwrite=True)
    if "relevance" in ds.get_field_schema():
        ds.save_view("least-relevant-first", ds.exists("relevance").sort_by("relevance"), overwrite=True)
    if "near_dup_group" in ds.get_field_schema():
        ds.save_view(
            "near-duplicate-groups",
            ds.match(F("near_dup_group") >= 0).sort_by([("near_dup_group", 1), ("keep", -1)]),
            overwrite=True,
        )
    ds.save_view("kept", ds.match(F("keep") == True), overwrite=True)
    ds.save_view("dropped", ds.match(F("keep") == False).sort_by("reason"), overwrite=True)


def mirror_curated(curated: pd.DataFrame, decisions: pd.DataFrame, name: str | None = None):
    """The review dataset from a curated manifest and the decisions, with its embeddings
    map: curate's last step, and review's own when the database lost the dataset."""
    flag_columns = [c for c in curated.columns if c.startswith("flag_")]
    name = name or dataset_name()
    ds = sync_dataset(curated, decisions, name, flag_columns=flag_columns)
    placed = embeddings_map(ds)
    if placed:
        print(f"review: embeddings map {MAP_KEY!r} of {placed} images (the App's Embeddings panel)")
    return ds


def embeddings_map(ds, features: Path = paths.RELEVANCE_FEATURES, scores: Path = paths.RELEVANCE_SCORES,
                   max_points: int = MAP_POINTS) -> int:
    """A 2-D map of the images by the relevance CNN's features (t-SNE, seeded), stored as
    the brain run `relevance_map`: in the App's Embeddings panel, coloured by `relevance`,
    the non-flowers form their own islands to lasso. Returns how many images it placed
    (0: no features, the relevance stage skipped). t-SNE rather than UMAP: scikit-learn
    is already installed (umap-learn brings numba and a JIT compile per process). The
    map lives only in the database: its bits may differ between CPUs, nothing reads it."""
    if not Path(features).exists() or not Path(scores).exists():
        return 0
    ids = pd.read_parquet(scores, columns=["id"])["id"]  # Arrow strings: compact, not Python objects
    vectors = np.load(features, mmap_mode="r")
    # The sample is drawn first, then looked up in the dataset: a dict of every sample's
    # id held ~0.3 kB an image. Scored files the dataset lacks (not named as images) are
    # left out of the sample, which can then place a few fewer than max_points.
    rows = np.arange(len(ids))
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(0).choice(rows, max_points, replace=False))
    picked = ds.select_by("cid", list(ids.iloc[rows]))
    sample_of = dict(zip(picked.values("cid"), picked.values("id")))
    rows = np.array([r for r, cid in zip(rows, ids.iloc[rows]) if cid in sample_of], dtype=np.int64)
    if len(rows) < 5:  # t-SNE needs a few points more than its perplexity
        return 0
    import fiftyone.brain as fob
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    if MAP_KEY in ds.list_brain_runs():
        ds.delete_brain_run(MAP_KEY)
    embeddings = {sample_of[ids.iloc[i]]: v for i, v in zip(rows, np.asarray(vectors[rows], dtype=np.float32))}
    # One thread: beside torch's and OpenCV's, scikit-learn's OpenMP and OpenBLAS threads
    # spun against each other (2,000 points, beside another job: 27 s with the defaults, 7 s
    # with one thread; 300 points in the curate of a small project: 14 s, 1.4 s).
    with threadpool_limits(1):
        fob.compute_visualization(
            ds.select(list(embeddings)), embeddings=embeddings, method="tsne", brain_key=MAP_KEY, seed=0,
            perplexity=min(30.0, (len(rows) - 1) / 3), pca_dims=min(50, len(rows) - 1), verbose=False,
            progress=False)
    return len(rows)


def open_dataset(name: str | None = None):
    """The review dataset, rebuilt when the database lost it (`rm -rf .fiftyone`, a new machine).

    `dvc repro curate` would not rebuild it: the stage's inputs did not change. Its outputs
    hold all it needs: the curated manifest and decisions.csv, the truth for every decision.
    """
    import fiftyone as fo

    name = name or dataset_name()
    if not fo.dataset_exists(name):
        if not paths.CURATED_MANIFEST.exists():
            raise UserError(f"FiftyOne dataset {name!r} not found, and {paths.CURATED_MANIFEST} is missing too: "
                            f"run `dvc repro -f -s curate` (or `dvc pull` where a remote has it)")
        print(f"review: FiftyOne dataset {name!r} not found (database deleted?); "
              f"rebuilding it from {paths.CURATED_MANIFEST} and {paths.DECISIONS}", file=sys.stderr)
        mirror_curated(pd.read_parquet(paths.CURATED_MANIFEST), read_decisions(), name)
    return fo.load_dataset(name)


def export_decisions(name: str | None = None, path: Path = paths.DECISIONS) -> pd.DataFrame:
    """The App's human tags -> decisions.csv. Decisions for ids no longer in the dataset stay."""
    ds = open_dataset(name)
    old = read_decisions(path)
    old_by_id = {r.id: r for r in old.itertuples(index=False)}
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = []
    in_dataset = set()
    for cid, tags in zip(ds.values("cid"), ds.values("tags")):
        in_dataset.add(cid)
        d = tags_to_decision(tags)
        if d is None:
            continue
        prev = old_by_id.get(cid)
        same = prev is not None and (prev.decision, prev.reason) == d
        rows.append({"id": cid, "decision": d[0], "reason": d[1], "time": prev.time if same else now})
    for r in old.itertuples(index=False):
        if r.id not in in_dataset:
            print(f"review: keeping decision for {r.id}, which is not in the dataset", file=sys.stderr)
            rows.append(r._asdict())
    out = pd.DataFrame(rows, columns=DECISION_COLUMNS)
    write_decisions(out, path)
    return out
