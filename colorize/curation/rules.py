"""Curation rules: keep or drop every file ingest found, with a reason.

Automatic checks, in the order that names the reason (the first that fires wins; every
score is kept, as a manifest column and a FiftyOne sample field, so thresholds can be
re-tuned without rerunning ingest):

| reason            | what fires it (thresholds in params.yaml `curate`)                       |
| ----------------- | ------------------------------------------------------------------------ |
| unreadable        | ingest could not decode it (`detail` holds ingest's status)              |
| too_small         | short side of the original below `min_side`                              |
| grayscale         | 95th-pct Lab chroma below `gray_chroma` (judged by colour, not file mode) |
| irrelevant        | relevance classifier score below `relevance.threshold` (relevance.py)    |
| tinted            | sepia, tint or colour filter: one colour fits every pixel (checks.py)    |
| dark, overexposed | L percentiles (checks.py)                                                |
| blurry            | Laplacian energy relative to contrast (checks.py)                        |
| low_information   | L entropy or contrast (checks.py)                                        |
| odd_aspect_ratio  | original width/height beyond `max_aspect`                                |
| duplicate         | same bytes as a kept file; the first by (source, relpath) is kept        |
| near_duplicate    | perceptual-hash neighbour of a better kept image (checks.py)             |

Then human decisions from `data/curation/decisions.csv` override the automatic ones
(review.py). Dropped files are never deleted; only the curated manifest leaves them out.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from colorize.common import tracking
from colorize.curation import checks

REASONS = (
    "unreadable", "too_small", "grayscale", "irrelevant", "tinted", "dark", "overexposed",
    "blurry", "low_information", "odd_aspect_ratio", "duplicate", "near_duplicate",
)
# The reason each planted garden defect must end with (for per-check accuracy).
GARDEN_TRUTH = {
    "unreadable": {"zero_byte", "not_image", "truncated", "corrupt", "bomb"},
    "too_small": {"tiny"},
    "grayscale": {"grayscale", "png16_gray"},
    "tinted": {"sepia", "tinted"},
    "irrelevant": {"irrelevant"},
    "duplicate": {"exact_duplicate"},
    "near_duplicate": {"near_duplicate"},
}
# Planted copies that show the same picture as their original (near-duplicate families).
# Not png_alpha: its transparent background is composited over white, which makes a
# visibly different picture (and the near-duplicate check rightly keeps both).
COPY_KINDS = {"near_duplicate", "cmyk", "palette"}


def _assign(reason, detail, mask, name, details) -> None:
    """Give `name` to rows in mask that have no reason yet (first check wins)."""
    free = mask & (reason == "")
    reason[free] = name
    detail[free] = np.asarray(details, dtype=object)[free] if not isinstance(details, str) else details


def curate(manifest: pd.DataFrame, images: np.ndarray | None, params: dict, relevance: pd.Series | None = None) -> pd.DataFrame:
    """Automatic decisions for every ingest row (human ones are applied by decisions.apply_decisions).

    `images` holds the pixels of the usable rows (status == ok), in manifest order;
    `relevance` (indexed by id) the classifier's scores, when it ran.
    """
    cfg = params["curate"]
    df = manifest.copy().reset_index(drop=True)
    n = len(df)
    usable = (df["status"] == "ok").to_numpy()
    reason = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)

    def on_usable(values, fill=np.nan):
        full = np.full(n, fill, dtype=np.asarray(values).dtype if fill is None else float)
        full[usable] = values
        return full

    reason[~usable] = "unreadable"
    detail[~usable] = df.loc[~usable, "status"].to_numpy()

    short_side = np.minimum(df["width"], df["height"]).to_numpy()
    _assign(reason, detail, usable & (short_side < cfg["min_side"]), "too_small",
            [f"{w}x{h} < {cfg['min_side']}" for w, h in zip(df["width"], df["height"])])

    # Every check's score, once (checks.py): the columns the decisions below are read from.
    if usable.any():
        scores = checks.quality_scores(images, df.loc[usable, "width"].to_numpy(), df.loc[usable, "height"].to_numpy())
        for col in scores.columns:
            df[col] = on_usable(scores[col].to_numpy())
    else:
        for col in checks.SCORE_COLUMNS:
            df[col] = np.nan
    gray = usable & (df["chroma_p95"].to_numpy() < cfg["gray_chroma"])
    _assign(reason, detail, gray, "grayscale", [f"chroma_p95={c:.2f} < {cfg['gray_chroma']}" for c in df["chroma_p95"]])

    df["relevance"] = np.nan
    if relevance is not None:
        df["relevance"] = df["id"].map(relevance).astype(float).to_numpy()
        threshold = params["relevance"]["threshold"]
        irrelevant = usable & (df["relevance"].to_numpy() < threshold)
        df["flag_irrelevant"] = irrelevant
        _assign(reason, detail, irrelevant, "irrelevant",
                [f"relevance={r:.3f} < {threshold}" for r in df["relevance"]])

    if usable.any():
        flagged = checks.flags(scores, thresholds(cfg))
        for name in ("tinted", "dark", "overexposed", "blurry", "low_information", "odd_aspect_ratio"):
            mask = np.zeros(n, bool)
            mask[usable] = flagged[name].to_numpy()
            df[f"flag_{name}"] = mask
            _assign(reason, detail, mask, name, _check_detail(name, df, thresholds(cfg)))

    # Exact duplicates among files that survived the checks above: keep the first.
    df["duplicate_of"] = ""
    first_by_sha: dict[str, str] = {}
    order = np.lexsort((df["relpath"].to_numpy(), df["source"].to_numpy()))
    for pos in order:
        if not usable[pos] or reason[pos]:
            continue
        sha = df.at[pos, "sha256"]
        if sha in first_by_sha:
            reason[pos] = "duplicate"
            detail[pos] = f"same bytes as {first_by_sha[sha]}"
            df.at[pos, "duplicate_of"] = first_by_sha[sha]
        else:
            first_by_sha[sha] = df.at[pos, "id"]

    # Near duplicates among usable images: of each group, the best survivor is kept.
    df["near_dup_group"] = -1
    df["group"] = df["sha256"]
    idx = np.flatnonzero(usable)
    if len(idx) > 1:
        quality = keep_rank(df.loc[usable, list(KEEP_RANK_COLUMNS)])  # not a copy of every column
        t = thresholds(cfg)
        group, _ = checks.near_duplicate_groups(
            images, quality=quality, threshold=t["near_duplicate"], colour_threshold=t["near_duplicate_colour"]
        )
        sizes = np.bincount(group, minlength=len(group))
        for g in np.unique(group[sizes[group] > 1]):
            members = idx[group == g]
            df.loc[members, "near_dup_group"] = int(g)
            alive = [m for m in members if reason[m] == ""]
            best = max(alive or list(members), key=lambda m: (quality[np.searchsorted(idx, m)], -m))
            for m in alive:
                if m != best:
                    reason[m] = "near_duplicate"
                    detail[m] = f"near copy of {df.at[best, 'id']}"
            # The whole group shares one split key, so no copy leaks across splits.
            df.loc[members, "group"] = df.at[best, "sha256"]

    df["reason"] = reason
    df["detail"] = detail
    df["keep"] = df["reason"] == ""
    # Every check tags what it flagged (a file can carry several flags; `reason` is the first).
    df["flag_unreadable"] = ~usable
    df["flag_too_small"] = usable & (short_side < cfg["min_side"])
    df["flag_grayscale"] = gray
    df["flag_duplicate"] = df["reason"] == "duplicate"
    df["flag_near_duplicate"] = df["reason"] == "near_duplicate"
    return df


# Which score and threshold each check compares, for the `detail` a person reads.
_CHECK_SCORES = {
    "tinted": ("tint_score", "<", "tint"),
    "dark": ("dark_score", "<", "dark"),
    "overexposed": ("light_score", ">", "overexposed"),
    "blurry": ("sharpness", "<", "blurry"),
    "low_information": ("entropy", "<", "low_information"),
    "odd_aspect_ratio": ("aspect_ratio", ">", "odd_aspect_ratio"),
}


def _check_detail(name: str, df: pd.DataFrame, limits: dict) -> list[str]:
    col, op, key = _CHECK_SCORES[name]
    if col not in df:
        return [name] * len(df)
    return [f"{col}={v:.3f} {op} {limits[key]}" for v in df[col]]


KEEP_RANK_COLUMNS = ("width", "height", "mode", "bytes")


def keep_rank(rows: pd.DataFrame) -> np.ndarray:
    """Which member of a near-duplicate group to keep: a rank, higher is better.

    Most original pixels first (a resized or cropped copy has fewer); then a file whose
    colours are stored as they are (RGB or gray, not palette, CMYK or alpha, which were
    converted); then more bytes per pixel (a copy re-encoded at a lower JPEG quality is
    smaller).
    """
    pixels = (rows["width"] * rows["height"]).to_numpy(dtype=float)
    faithful = rows["mode"].isin(["RGB", "L"]).to_numpy(dtype=float)
    bytes_per_pixel = rows["bytes"].to_numpy(dtype=float) / np.maximum(pixels, 1)
    order = np.lexsort((bytes_per_pixel, faithful, pixels))  # last key is primary
    rank = np.empty(len(rows))
    rank[order] = np.arange(len(rows))
    return rank


def thresholds(cfg: dict) -> dict:
    """checks.THRESHOLD_KEYS from params (curate.*), the one home of their values."""
    same = ("tint", "dark", "overexposed", "blurry", "low_information", "low_contrast",
            "near_duplicate", "near_duplicate_colour")
    out = {k: cfg[k] for k in same} | {"min_chroma": cfg["gray_chroma"], "odd_aspect_ratio": cfg["max_aspect"]}
    assert set(out) == set(checks.THRESHOLD_KEYS), "rules.thresholds and checks.THRESHOLD_KEYS disagree"
    return out


def summarise(df: pd.DataFrame) -> dict:
    counts = df.loc[~df["keep"], "reason"].value_counts().to_dict()
    by_reason = {r: int(counts.pop(r, 0)) for r in REASONS}
    by_reason.update({r: int(c) for r, c in sorted(counts.items())})  # human:<why> reasons
    report = {
        "found": len(df),
        "kept": int(df["keep"].sum()),
        "dropped": int((~df["keep"]).sum()),
        "by_reason": by_reason,
    }
    if report["kept"] + sum(by_reason.values()) != report["found"]:
        raise RuntimeError(f"curate counts do not reconcile: {report}")
    return report


def garden_accuracy(df: pd.DataFrame) -> dict:
    """Precision and recall of each check against the garden's planted truth.

    Each check is scored on its own flag (not on the first reason), over the garden's
    files: recall = flagged planted defects / planted defects; precision = flagged
    planted defects / (those + flagged CLEAN images). An image flagged that carries a
    different planted defect (a non-flower photo that is also one-hued, say) is counted
    as `overlap`, not as a false positive.

    Near duplicates are judged per family: a clean original and its copies that show
    the same picture (resized/re-encoded/cropped, or stored as palette or CMYK) and
    survived the earlier checks. A family is resolved when exactly one member is kept;
    recall = resolved families / families, precision = near-duplicate drops that belong
    to a family / all near-duplicate drops.
    """
    g = df[df["source"] == "garden"].reset_index(drop=True)
    if g.empty or "defect" not in g:
        return {}
    out = {}
    clean = (g["defect"] == "none").to_numpy()
    for check, truth in GARDEN_TRUTH.items():
        if check == "near_duplicate":
            continue
        flag = f"flag_{check}"
        if flag not in g:
            continue
        flagged = g[flag].to_numpy(bool)
        actual = g["defect"].isin(truth).to_numpy()
        tp, fn = int((flagged & actual).sum()), int((~flagged & actual).sum())
        fp, overlap = int((flagged & clean).sum()), int((flagged & ~actual & ~clean).sum())
        out[check] = {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
                      "tp": tp, "fp": fp, "fn": fn, "overlap": overlap}
    # Near-duplicate families.
    reason = g["auto_reason"] if "auto_reason" in g else g["reason"]
    alive = reason.isin(["", "near_duplicate"]).to_numpy()
    family = {}
    for pos, (defect, of, rel) in enumerate(zip(g["defect"], g["defect_of"], g["relpath"])):
        if defect in COPY_KINDS and of:
            family.setdefault(of, []).append(pos)
    pos_of = {r: p for p, r in enumerate(g["relpath"])}
    members_in_family = set()
    resolved = total = 0
    for original, copies in family.items():
        members = [m for m in [pos_of.get(original)] + copies if m is not None and alive[m]]
        members_in_family.update(members)
        if len(members) < 2:
            continue
        total += 1
        resolved += int(sum(reason.iat[m] == "" for m in members) == 1)
    dropped = np.flatnonzero((reason == "near_duplicate").to_numpy())
    correct = sum(int(d in members_in_family) for d in dropped)
    out["near_duplicate"] = {"precision": _ratio(correct, len(dropped)), "recall": _ratio(resolved, total),
                             "families": total, "resolved": resolved, "dropped": int(len(dropped)),
                             "dropped_outside_families": int(len(dropped) - correct)}
    return out


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def examples_grid(df: pd.DataFrame, images: np.ndarray, path: Path, per_reason: int = 8) -> None:
    """One row per reason that dropped a decodable image, with up to `per_reason` examples."""
    from colorize.common.grid import save_grid

    usable_pos = {p: i for i, p in enumerate(np.flatnonzero((df["status"] == "ok").to_numpy()))}
    size = images.shape[1] if images is not None and len(images) else 32
    blank = np.full((size, size, 3), 255, np.uint8)
    rows = []
    for r in ["kept"] + sorted(set(df["reason"]) - {"", "unreadable"}):
        mask = df["keep"] if r == "kept" else df["reason"] == r
        picks = [usable_pos[p] for p in np.flatnonzero(mask.to_numpy()) if p in usable_pos][:per_reason]
        if picks:
            rows.append((_label_tile(r, size),) + tuple(images[i] for i in picks) + (blank,) * (per_reason - len(picks)))
    if rows:
        save_grid(rows, path)


def _label_tile(text: str, size: int) -> np.ndarray:
    """A white tile with the row's reason written on it (the grid's row header)."""
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(tile)
    words = text.replace("_", " ").replace(":", ": ").split()
    for i, word in enumerate(words[:4]):
        draw.text((3, 3 + 12 * i), word, fill=(0, 0, 0))
    return np.asarray(tile)


def log_to_mlflow(report: dict, params: dict, examples: Path) -> None:
    mlflow = tracking.setup()
    with mlflow.start_run(run_name="curate", tags=tracking.run_tags({"stage": "curate"})):
        mlflow.log_params({f"curate.{k}": v for k, v in params["curate"].items()})
        metrics = {"found": report["found"], "kept": report["kept"]}
        metrics.update({f"dropped_{k.replace(':', '_')}": v for k, v in report["by_reason"].items()})
        for check, acc in report.get("garden_accuracy", {}).items():
            for k in ("precision", "recall"):
                if not math.isnan(acc[k]):
                    metrics[f"garden_{check}_{k}"] = acc[k]
        mlflow.log_metrics(metrics)
        if examples.exists():
            mlflow.log_artifact(str(examples))
