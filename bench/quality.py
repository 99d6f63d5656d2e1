"""The real-photo quality study (docs/quality.md): each lever, one `dvc exp run` on the
shared flower photos, read against the trivial baselines and the truth's colourfulness.

The project is made once under --work (a git+DVC repo whose source is the folder
../shared/data, pets-160 as the relevance negatives, as a user would set it up) and
`dvc repro` runs the stages up to the priors there, timed, and commits. Then each lever
named on the command line is one `dvc exp run -S ...` from that commit: train, evaluate
and report run, and a line's minutes after ingest are theirs plus relevance, curate,
split and priors once.

    .venv/bin/python -m bench.quality --flips fast context hybrid >> reports/quality.jsonl
    .venv/bin/python -m bench.quality --list

Prints one JSON line per lever (stdout): its -S set, the test metrics next to the
baselines, the minutes, and the learning curve (val PSNR per epoch). Not a test: each
lever takes minutes to tens of minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from colorize.cli import preset  # noqa: E402
from tests.conftest import bin_path, make_project  # noqa: E402 - reuse the test project builder

SHARED = ROOT.parent / "shared" / "data"
# The project a user makes for their own photos: docs/real-data.md.
REAL = {"data.sources": ["folder"], "data.folder.path": str(SHARED), "data.folder.negative_labels": ["pets-160"]}

# Each lever: the -S set from params.yaml's defaults (train.model unet, 15 epochs, 64 px).
# All but `default` train with the CPU's fast kernels (train.portable=false: 3x faster
# here, docs/reproducibility.md), or 15 epochs alone would take the whole budget.
FAST = ["train.portable=false"]
LEVERS: dict[str, list[str]] = {
    "default": [],
    "fast": FAST,
    "mse": FAST + ["train.unet.loss=mse"],
    "context": FAST + ["train.unet.global_context=true"],
    "context_mse": FAST + ["train.unet.global_context=true", "train.unet.loss=mse"],
    "hybrid": FAST + ["train.unet.global_context=true", "train.unet.bins_weight=0.01"],
    "hybrid_bins": FAST + ["train.unet.global_context=true", "train.unet.bins_weight=0.05", "train.unet.decode=bins"],
    "hybrid_e40": FAST + ["train.unet.global_context=true", "train.unet.bins_weight=0.01", "train.epochs=40"],
    "hybrid_w32": FAST + ["train.unet.global_context=true", "train.unet.bins_weight=0.01", "train.width=32"],
    "zhang": FAST + ["train.model=zhang"],
}


BASE_STAGES = ("params", "download", "ingest", "relevance", "curate", "split", "priors")  # what no lever changes


def base_project(work: Path, env: dict) -> dict[str, float]:
    """The project up to the priors, made and run once (resumable): each stage's seconds."""
    proj, record = work / "project", work / "stages.json"
    if not proj.exists():
        make_project(proj, REAL)
    seconds = json.loads(record.read_text()) if record.exists() else {}
    ran = False
    for stage in BASE_STAGES:
        if stage in seconds:
            continue
        t = time.perf_counter()
        subprocess.run([bin_path("dvc"), "repro", "--single-item", stage], cwd=proj, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds[stage] = round(time.perf_counter() - t, 1)
        record.write_text(json.dumps(seconds))
        ran = True
        print(f"quality: {stage} {seconds[stage]} s", file=sys.stderr)
    # Commit only what these stages made: a later call finds the last experiment applied
    # in the workspace, which must not become the base (each lever resets to HEAD).
    if ran:
        subprocess.run(["git", "add", "-A"], cwd=proj, check=True)
        subprocess.run(["git", "commit", "-qm", "the stages no lever changes"], cwd=proj, check=True)
    return seconds


FLIP_EVAL = """
from colorize.common import portable
portable.pin()  # as the evaluate stage: the same bits
import json, sys, torch
from pathlib import Path
from colorize.common.params import load_params
from colorize.evaluation.evaluate import evaluate
from colorize.training import checkpoint
from colorize.training.loader import open_split
portable.configure_torch()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
model, _ = checkpoint.load_model(Path("models/model.pt"))
model.flip_average = sys.argv[1] == "1"
scale, predict = float(sys.argv[2]), model.predict
model.predict = lambda L: scale * predict(L)  # ab scaled: more vivid, by hand
print(json.dumps(evaluate(model, open_split("test"), open_split("train"), load_params()["evaluate"]).metrics))
"""


def flip_metrics(proj: Path, env: dict, flip: bool = True, scale: float = 1.0) -> dict:
    """The experiment's model evaluated with test-time flips (train.flip_average), without
    training it again: training never reads that key (no checkpoint is picked by
    validation), so `-S train.flip_average=true` trains these very weights. `scale`
    multiplies the predicted ab (the saturation sweep: colourfulness bought with PSNR)."""
    out = subprocess.run([sys.executable, "-c", FLIP_EVAL, "1" if flip else "0", str(scale)], cwd=proj, env=env,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def learning_curves(proj: Path) -> dict[str, list[float]]:
    """Per epoch: val PSNR, train and val loss (reports/train_history.csv)."""
    with open(proj / "reports" / "train_history.csv") as f:
        rows = list(csv.DictReader(f))
    return {f"{k}_per_epoch": [round(float(r[k]), 4) for r in rows] for k in ("val_psnr", "train_loss", "val_loss")}


def table(jsonl: Path) -> str:
    """docs/quality.md's study table from the lines this script printed."""
    out = ["| lever | PSNR (dB) | gain over lookup, 95% CI | colourfulness (x truth) | dE2000 (lookup) "
           "| s / epoch | min after ingest | command (after the preset's data keys) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for raw in jsonl.read_text().splitlines():
        d = json.loads(raw)
        if "lever" not in d:
            continue
        ci = f"[{d['gain_ci95_lo']:+.2f}, {d['gain_ci95_hi']:+.2f}]" if d.get("gain_ci95_lo") is not None else ""
        if d["lever"].endswith("+flip"):
            ci = "(not bootstrapped)"
        out.append(f"| {d['lever']} | {d['psnr']:.2f} | {d['gain_over_best_baseline']:+.2f} {ci} "
                   f"| {d['colourfulness']:.1f} ({d['colourfulness_ratio']:.2f}x) "
                   f"| {d['delta_e']:.2f} ({d['delta_e_lookup']:.2f}) | {d['seconds_per_epoch']} "
                   f"| {d['repro_after_ingest_minutes']} | `dvc exp run {' '.join('-S ' + x for x in d['set'])}` |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("levers", nargs="*", help=f"any of {', '.join(LEVERS)}, or KEY=VALUE,KEY=VALUE for a custom set")
    ap.add_argument("--work", type=Path, default=Path("/tmp/colorize-quality"), help="the project (kept between runs)")
    ap.add_argument("--list", action="store_true", help="print the levers and their -S sets")
    ap.add_argument("--table", type=Path, metavar="JSONL", help="print the markdown table of a run's lines")
    ap.add_argument("--flips", action="store_true", help="also each lever's model with test-time flips (a line more)")
    ap.add_argument("--saturation", metavar="EXP", help="scale the ab of experiment EXP's model (with flips) by "
                    "1.0, 1.25, 1.5, 1.75: a line each")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    if args.list:
        for name, sets in LEVERS.items():
            print(name, " ".join(f"-S {s}" for s in sets))
        return
    if not (SHARED / "flowers-128").is_dir():
        sys.exit(f"reference photos not found at {SHARED / 'flowers-128'}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{args.work / 'mlflow.db'}"}
    proj = args.work / "project"
    stages = base_project(args.work, env)
    before_train = sum(v for k, v in stages.items() if k in ("relevance", "curate", "split", "priors"))
    if args.saturation:
        subprocess.run(["git", "reset", "-q", "--hard"], cwd=proj, check=True)
        subprocess.run([bin_path("dvc"), "exp", "apply", args.saturation], cwd=proj, env=env, check=True,
                       capture_output=True)
        for scale in (1.0, 1.25, 1.5, 1.75):
            m = flip_metrics(proj, env, flip=True, scale=scale)
            print(json.dumps({"saturation_of": args.saturation, "ab_scale": scale,
                              **{k: m.get(k) for k in ("psnr", "psnr_lookup", "gain_over_best_baseline",
                                                       "colourfulness", "colourfulness_ratio", "delta_e")}}), flush=True)
            print(f"quality: {args.saturation} ab x{scale}: psnr {m['psnr']:.2f} (+{m['gain_over_best_baseline']:.2f}), "
                  f"colourfulness x{m['colourfulness_ratio']:.2f}", file=sys.stderr)
    for lever in args.levers:
        sets = LEVERS[lever] if lever in LEVERS else [] if lever.startswith("preset:") else lever.split(",")
        # back to the baseline: `dvc exp run` leaves the last experiment in the workspace
        subprocess.run(["git", "reset", "-q", "--hard"], cwd=proj, check=True)
        subprocess.run([bin_path("dvc"), "checkout", "-q", "--force"], cwd=proj, env=env, capture_output=True)  # outputs not run yet: fine
        t = time.perf_counter()
        cmd = [bin_path("dvc"), "exp", "run", "-n", f"q-{lever[:40].replace('=', '-').replace(',', '_')}"]
        for s in sets:
            cmd += ["-S", s]
        if lever.startswith("preset:"):  # the preset itself, through colorize-preset, on the same photos
            path = ROOT / "presets" / f"{lever.split(':', 1)[1]}.yaml"
            cmd = [bin_path("colorize-preset"), str(path), "-S", f"data.folder.path={SHARED}"]
            sets = [f"{k}={preset.as_value(v)}" for k, v in preset.flatten(yaml.safe_load(path.read_text())).items()]
        subprocess.run(cmd, cwd=proj, env=env, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t
        metrics = json.loads((proj / "reports" / "metrics.json").read_text())
        train = json.loads((proj / "reports" / "train.json").read_text())
        keep = ("psnr", "psnr_gray", "psnr_const", "psnr_lookup", "best_baseline", "gain_over_best_baseline",
                "gain_ci95_lo", "gain_ci95_hi", "colourfulness", "colourfulness_truth", "colourfulness_ratio",
                "colourfulness_lookup", "delta_e", "delta_e_lookup", "n_test")
        line = {"lever": lever, "set": sets, **{k: metrics.get(k) for k in keep},
                "n_params": train["n_params"], "seconds_per_epoch": round(train["seconds_per_epoch"], 1),
                "train_evaluate_minutes": round(seconds / 60, 1),
                "repro_after_ingest_minutes": round((seconds + before_train) / 60, 1),
                **learning_curves(proj)}
        print(json.dumps(line), flush=True)
        print(f"quality: {lever}: psnr {metrics['psnr']:.2f} (+{metrics['gain_over_best_baseline']:.2f} over "
              f"{metrics['best_baseline']}), colourfulness x{metrics.get('colourfulness_ratio', 0):.2f}, "
              f"{seconds / 60:.1f} min", file=sys.stderr)
        if args.flips and "train.flip_average=true" not in sets and not lever.startswith("preset:"):
            t = time.perf_counter()
            flipped = flip_metrics(proj, env)
            extra = time.perf_counter() - t  # the flipped evaluation against the plain one, roughly
            print(json.dumps({**line, "lever": f"{lever}+flip", "set": [*sets, "train.flip_average=true"],
                              **{k: flipped.get(k) for k in keep}, "flip_eval_seconds": round(extra, 1)}), flush=True)
            print(f"quality: {lever}+flip: psnr {flipped['psnr']:.2f} (+{flipped['gain_over_best_baseline']:.2f}), "
                  f"colourfulness x{flipped['colourfulness_ratio']:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
