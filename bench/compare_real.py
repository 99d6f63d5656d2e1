"""Every model on real flower photos, with one training budget: the README's comparison
on ../shared/data/flowers-128 (pets-160 beside it as the relevance negatives, which
curation then drops).

Builds a fresh git+DVC project whose source is the folder ../shared/data at 64 px, runs
`dvc repro` once for the default model, then `dvc exp run -S train.model=X` for the
others, all with `train.epochs` = EPOCHS, and prints each model's test metrics next to
the trivial baselines.

    .venv/bin/python bench/compare_real.py [EPOCHS] > reports/compare_real.json

Not a test: it takes tens of minutes on 2 cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import bin_path, make_project  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
MODELS = ("unet", "zhang", "resnet", "gan", "cnn")


def main() -> None:
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    if not (SHARED / "flowers-128").is_dir():
        sys.exit(f"reference photos not found at {SHARED / 'flowers-128'}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    results = {"epochs": epochs, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        proj = make_project(Path(tmp) / "real", {
            "data.sources": ["folder"], "data.folder.path": str(SHARED),
            "data.folder.negative_labels": ["pets-160"], "ingest.image_size": 64, "train.epochs": epochs,
        })
        for model in MODELS:
            t = time.perf_counter()
            cmd = [bin_path("dvc"), "exp", "run", "-S", f"train.model={model}"]
            subprocess.run(cmd, cwd=proj, check=True, env=env, stdout=subprocess.DEVNULL)
            metrics = json.loads((proj / "reports" / "metrics.json").read_text())
            train = json.loads((proj / "reports" / "train.json").read_text())
            results["models"][model] = {
                "metrics": metrics, "n_params": train["n_params"], "seconds_per_epoch": train["seconds_per_epoch"],
                "wall_seconds": round(time.perf_counter() - t, 1),
            }
            print(json.dumps({model: {k: round(metrics[k], 2) for k in ("psnr", "psnr_best_baseline", "colourfulness")}}),
                  file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
