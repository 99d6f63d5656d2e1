"""Stage 3, curate: decide keep or drop, with a reason, for every file ingest found.

Checks, in the order that names the reason (the first that fires wins; every score is
kept as a column, so a threshold can be re-tuned without rerunning ingest):
- `unreadable`: ingest could not decode it (empty, not an image, truncated, corrupt,
  too large); `detail` holds ingest's status.
- `too_small`: the short side of the original is below curate.min_side.
- `grayscale`: judged by Lab chroma, not by the file's mode: an RGB JPEG with R=G=B is
  as gray as an L-mode PNG. `chroma_p95` (95th percentile of per-pixel chroma) below
  curate.gray_chroma flags it. A percentile rather than the mean keeps colour photos
  of mostly gray scenes with a few colourful objects.
- `duplicate`: byte-identical to another usable file; the first by (source, relpath)
  is kept, the rest point to it in `duplicate_of`.

Outputs: `data/curated/manifest.parquet` (every ingest row, plus keep/reason/detail and
the scores) and `reports/curate.json` (counts per reason; they sum to the files found).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline.colour import chroma, uint8_to_lab
from pipeline.errors import UserError, run_main
from pipeline.ingest import MANIFEST as INGEST_MANIFEST, SHARDS
from pipeline.params import load_params
from pipeline.store import load_images

OUT_DIR = Path("data/curated")
MANIFEST = OUT_DIR / "manifest.parquet"
REPORT = Path("reports/curate.json")
REASONS = ("unreadable", "too_small", "grayscale", "duplicate")


def chroma_p95(images: np.ndarray, batch: int = 256) -> np.ndarray:
    """95th percentile of per-pixel Lab chroma, per image, for (n, S, S, 3) uint8."""
    out = np.empty(len(images), dtype=np.float32)
    for start in tqdm(range(0, len(images), batch), desc="curate: chroma", unit="batch", leave=False):
        lab = uint8_to_lab(images[start : start + batch])
        c = chroma(lab).flatten(1)
        out[start : start + batch] = torch.quantile(c, 0.95, dim=1).numpy()
    return out


def curate(manifest: pd.DataFrame, images: np.ndarray | None, params: dict) -> pd.DataFrame:
    """Add keep/reason/detail/duplicate_of/chroma_p95 to a copy of the ingest manifest.

    `images` holds the pixels of the usable rows (status == ok), in manifest order.
    """
    cfg = params["curate"]
    df = manifest.copy()
    usable = (df["status"] == "ok").to_numpy()
    df["chroma_p95"] = np.nan
    if usable.any():
        df.loc[usable, "chroma_p95"] = chroma_p95(images)
    reason = np.full(len(df), "", dtype=object)
    detail = np.full(len(df), "", dtype=object)

    reason[~usable] = "unreadable"
    detail[~usable] = df.loc[~usable, "status"].to_numpy()

    short_side = np.minimum(df["width"], df["height"]).to_numpy()
    small = usable & (short_side < cfg["min_side"]) & (reason == "")
    reason[small] = "too_small"
    detail[small] = [f"{w}x{h} < {cfg['min_side']}" for w, h in zip(df["width"][small], df["height"][small])]

    gray = usable & (df["chroma_p95"].to_numpy() < cfg["gray_chroma"]) & (reason == "")
    reason[gray] = "grayscale"
    detail[gray] = [f"chroma_p95={c:.2f} < {cfg['gray_chroma']}" for c in df.loc[gray, "chroma_p95"]]

    # Exact duplicates among files that survived the checks above: keep the first.
    df["duplicate_of"] = ""
    order = df.assign(_r=reason).query("status == 'ok' and _r == ''").sort_values(["source", "relpath"])
    first_by_sha: dict[str, str] = {}
    id_to_pos = {i: p for p, i in enumerate(df["id"])}
    for row_id, sha in zip(order["id"], order["sha256"]):
        if sha in first_by_sha:
            pos = id_to_pos[row_id]
            reason[pos] = "duplicate"
            detail[pos] = f"same bytes as {first_by_sha[sha]}"
            df.iat[pos, df.columns.get_loc("duplicate_of")] = first_by_sha[sha]
        else:
            first_by_sha[sha] = row_id

    df["reason"] = reason
    df["detail"] = detail
    df["keep"] = df["reason"] == ""
    # Duplicate groups (exact ones now, near ones later) must stay within one split.
    df["group"] = df["sha256"]
    return df


def summarise(df: pd.DataFrame) -> dict:
    counts = df.loc[~df["keep"], "reason"].value_counts().to_dict()
    report = {
        "found": len(df),
        "kept": int(df["keep"].sum()),
        "dropped": int((~df["keep"]).sum()),
        "by_reason": {r: int(counts.get(r, 0)) for r in REASONS},
    }
    if report["kept"] + sum(report["by_reason"].values()) != report["found"]:
        raise RuntimeError(f"curate counts do not reconcile: {report}")
    return report


def main() -> None:
    params = load_params()
    if not INGEST_MANIFEST.exists():
        raise UserError(f"{INGEST_MANIFEST} not found: run the ingest stage first (dvc repro ingest)")
    manifest = pd.read_parquet(INGEST_MANIFEST)
    ok = manifest[manifest["status"] == "ok"]
    images = load_images(ok, SHARDS) if len(ok) else None
    df = curate(manifest, images, params)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    df.to_parquet(MANIFEST, index=False)
    report = summarise(df)
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"curate: kept {report['kept']} of {report['found']}; dropped {report['by_reason']}")


if __name__ == "__main__":
    run_main(main)
