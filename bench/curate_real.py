"""Curation on real photos: the reference sets in ../shared/data as a folder source.

Builds a fresh git+DVC project whose only source is the folder ../shared/data, with
`pets-160` marked as negatives (data.folder.negative_labels), runs the pipeline up to
curate with `dvc repro curate`, and reports:
  - per reason, how many photos of each set were dropped (grayscale, sepia/tinted,
    duplicates, irrelevant, ...), next to what the sets' README says to expect;
  - the relevance classifier's ROC AUC, precision and recall on held-out labels
    (pets vs flowers), as measured by the relevance stage itself.

    .venv/bin/python bench/curate_real.py > reports/curate_real.json

Not a test (it takes a few minutes); tests/test_curation.py holds a smaller realdata
check. Exits with a one-line message when the reference photos are absent.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import bin_path, make_project  # noqa: E402 - reuse the test project builder

SHARED = ROOT.parent / "shared" / "data"
SETS = ("flowers-128", "pets-160")


def run_curation(work: Path, image_size: int = 64) -> tuple[Path, float]:
    proj = make_project(work / "real", {
        "data.sources": ["folder"],
        "data.folder.path": str(SHARED),
        "data.folder.negative_labels": ["pets-160"],
        "ingest.image_size": image_size,
    })
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    t = time.perf_counter()
    subprocess.run([bin_path("dvc"), "repro", "curate"], cwd=proj, check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return proj, time.perf_counter() - t


def summarise(proj: Path) -> dict:
    manifest = pd.read_parquet(proj / "data" / "curated" / "manifest.parquet")
    manifest["set"] = manifest["label"].str.split("/").str[0]
    by_set = {}
    for name, part in manifest.groupby("set"):
        dropped = part[~part["keep"]]
        by_set[name] = {
            "files": len(part),
            "kept": int(part["keep"].sum()),
            "dropped": len(dropped),
            "by_reason": {r: int(n) for r, n in dropped["reason"].value_counts().sort_index().items()},
            # every check's own count, before one reason is chosen per image
            "flagged": {c.removeprefix("flag_"): int(part[c].fillna(False).astype(bool).sum())
                        for c in sorted(manifest.columns) if c.startswith("flag_")},
        }
    curate = json.loads((proj / "reports" / "curate.json").read_text())
    relevance = json.loads((proj / "reports" / "relevance.json").read_text())
    return {"sets": by_set, "found": curate["found"], "kept": curate["kept"],
            "by_reason": curate["by_reason"], "relevance_holdout": relevance}


def main() -> None:
    missing = [s for s in SETS if not (SHARED / s).is_dir()]
    if missing:
        sys.exit(f"reference photos not found: {', '.join(str(SHARED / s) for s in missing)}")
    with tempfile.TemporaryDirectory() as tmp:
        proj, seconds = run_curation(Path(tmp))
        result = summarise(proj)
    result["repro_seconds"] = round(seconds, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
