"""The README's grid of real results: gray | colorized | truth for test photos picked at
random by a fixed seed (not cherry-picked), colorized as the `colorize` command does it
(ab predicted at the working size, recombined with the photo's own full-resolution L).

    .venv/bin/python -m bench.quality_grid PROJECT docs/images/real-grid.jpg [--seed 0] [--n 16]

PROJECT is a project after `dvc repro` (e.g. bench/quality.py's, /tmp/colorize-quality/project,
with the experiment applied: `dvc exp apply NAME`). Prints the picked files.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from colorize.cli.colorize import colorize_pixels, gray_band, load_model, luminance, model_factor  # noqa: E402

CELL = 128  # px of each picture in the grid
GAP = 4  # px between pictures; 4 GAP between the triples


def pick_test_photos(proj: Path, n: int, seed: int) -> list[str]:
    """n test-split files, drawn by np.random.default_rng(seed) from the test rows in id order."""
    rows = pq.read_table(proj / "data" / "split" / "manifest.parquet", columns=["id", "split", "path"]).to_pandas()
    test = rows[rows["split"] == "test"].sort_values("id").reset_index(drop=True)
    picked = np.sort(np.random.default_rng(seed).choice(len(test), size=min(n, len(test)), replace=False))
    return [test.loc[i, "path"] for i in picked]


def triple(path: str, model, render: int, factor: int) -> list[Image.Image]:
    pixels = np.asarray(Image.open(path).convert("RGB"))
    colorized, _ = colorize_pixels(pixels, model, render, factor)
    gray = gray_band(luminance(pixels))
    return [Image.fromarray(a).resize((CELL, CELL), Image.BICUBIC) for a in (gray, colorized, pixels)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--columns", type=int, default=4, help="triples per row")
    args = ap.parse_args()
    proj = args.project.resolve()
    model, params = load_model(proj / "models" / "model.pt")
    render, factor = params["ingest"]["image_size"], model_factor(params["train"])
    paths = pick_test_photos(proj, args.n, args.seed)
    cols, rows = args.columns, -(-len(paths) // args.columns)
    width = cols * (3 * CELL + 2 * GAP) + (cols - 1) * 4 * GAP
    grid = Image.new("RGB", (width, rows * CELL + (rows - 1) * GAP), "white")
    for k, path in enumerate(paths):
        r, c = divmod(k, cols)
        x0 = c * (3 * CELL + 2 * GAP + 4 * GAP)
        for j, im in enumerate(triple(path, model, render, factor)):
            grid.paste(im, (x0 + j * (CELL + GAP), r * (CELL + GAP)))
        print(os.path.relpath(path, proj.parent))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, quality=90)


if __name__ == "__main__":
    main()
