"""Stage 5, train: fit the model named by train.model to predict ab from L.

The whole training split fits in memory at the working resolution (1,000 images of
64x64 are 12 MB), so the loader is a tensor index: no decode or Lab conversion repeats
per epoch. Augmentation is a horizontal flip per sample.

Outputs:
- `models/model.pt`: a checkpoint with model, optimizer, scheduler, epoch and the
  resolved params; load it with `torch.load(weights_only=True)`. It holds nothing
  run-specific (no run id, no time), so the same data and params give the same bytes.
- `reports/train_history.csv`: per-epoch train/val loss and val PSNR (a DVC plot).
- `reports/train.json`: final numbers and the MLflow run id (a DVC metrics file).
- An MLflow run with params, per-epoch metrics, the model and a sample grid.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from pipeline import tracking
from pipeline.colour import compose, normalise_ab, normalise_l
from pipeline.data import load_split
from pipeline.errors import run_main
from pipeline.grid import save_grid
from pipeline.metrics import psnr_uint8
from pipeline.models import build_model, count_parameters, predict_ab
from pipeline.params import load_params

MODEL_PATH = Path("models/model.pt")
HISTORY = Path("reports/train_history.csv")
REPORT = Path("reports/train.json")
GRID = Path("reports/train_grid.png")


def set_determinism(seed: int, threads: int) -> None:
    """Seeded and deterministic on CPU: same data + params -> same weights."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)


def save_checkpoint(path: Path, **state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint


def grid_rows(L: torch.Tensor, ab: torch.Tensor, truth: np.ndarray) -> list[tuple]:
    gray = compose(L, torch.zeros_like(ab))
    pred = compose(L, ab)
    return [(gray[i], pred[i], truth[i]) for i in range(len(L))]


def evaluate_loss(model: nn.Module, L: torch.Tensor, ab: torch.Tensor, batch_size: int) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(L), batch_size):
            x = L[start : start + batch_size]
            total += model.loss(x, ab[start : start + batch_size]).item() * len(x)
    model.train()
    return total / len(L)


def train(params: dict) -> dict:
    cfg = params["train"]
    set_determinism(cfg["seed"], cfg["threads"])
    train_data, val_data = load_split("train"), load_split("val")
    # Network inputs: (n, 1, H, W) normalised L and (n, 2, H, W) normalised ab.
    L_train = normalise_l(train_data.L)[:, None]
    ab_train = normalise_ab(train_data.ab).permute(0, 3, 1, 2).contiguous()
    L_val = normalise_l(val_data.L)[:, None]
    ab_val = normalise_ab(val_data.ab).permute(0, 3, 1, 2).contiguous()

    model = build_model(cfg)  # zhang reads data/priors/priors.npz (the priors stage)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    steps_per_epoch = math.ceil(len(L_train) / cfg["batch_size"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"] * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg["seed"])

    mlflow = tracking.setup()
    history = []
    with mlflow.start_run(tags=tracking.run_tags({"model": cfg["model"]})) as run:
        mlflow.log_params(tracking.flat_params("train", cfg))
        if cfg["model"] == "zhang":
            mlflow.log_params(tracking.flat_params("priors", params["priors"]))
        mlflow.log_params({"ingest.image_size": params["ingest"]["image_size"], "n_train": len(L_train), "n_val": len(L_val)})
        n_params = count_parameters(model)
        mlflow.log_param("n_params", n_params)
        for epoch in range(1, cfg["epochs"] + 1):
            t0 = time.perf_counter()
            order = torch.randperm(len(L_train), generator=gen)
            flip = torch.rand(len(L_train), generator=gen) < 0.5
            running = 0.0
            bar = tqdm(range(steps_per_epoch), desc=f"train epoch {epoch}/{cfg['epochs']}", unit="batch", leave=False)
            for step in bar:
                idx = order[step * cfg["batch_size"] : (step + 1) * cfg["batch_size"]]
                x, y = L_train[idx], ab_train[idx]
                f = flip[idx]
                x = torch.where(f[:, None, None, None], x.flip(-1), x)
                y = torch.where(f[:, None, None, None], y.flip(-1), y)
                loss = model.loss(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += loss.item() * len(idx)
                bar.set_postfix(loss=f"{loss.item():.4f}")
            seconds = time.perf_counter() - t0
            val_loss = evaluate_loss(model, L_val, ab_val, cfg["batch_size"])
            val_psnr = float(psnr_uint8(compose(val_data.L, predict_ab(model, val_data.L)), val_data.rgb).mean())
            row = {
                "epoch": epoch,
                "train_loss": running / len(L_train),
                "val_loss": val_loss,
                "val_psnr": val_psnr,
                "lr": sched.get_last_lr()[0],
                "seconds": seconds,
            }
            history.append(row)
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            print(f"epoch {epoch}: train_loss {row['train_loss']:.4f} val_loss {val_loss:.4f} val_psnr {val_psnr:.2f} dB ({seconds:.1f}s)")
            save_checkpoint(
                MODEL_PATH,
                model=model.state_dict(),
                optimizer=opt.state_dict(),
                scheduler=sched.state_dict(),
                epoch=epoch,
                params=params,
            )

        n = min(8, len(val_data.L))
        save_grid(grid_rows(val_data.L[:n], predict_ab(model, val_data.L[:n]), val_data.rgb[:n]), GRID)
        mlflow.log_artifact(str(GRID))
        _log_model(mlflow, model, L_val[:1])
        summary = {
            "train_loss": history[-1]["train_loss"],
            "val_loss": history[-1]["val_loss"],
            "val_psnr": history[-1]["val_psnr"],
            "n_params": n_params,
            "seconds_per_epoch": float(np.median([h["seconds"] for h in history])),
            "mlflow_run_id": run.info.run_id,
        }
    HISTORY.parent.mkdir(exist_ok=True)
    pd.DataFrame(history).to_csv(HISTORY, index=False)
    REPORT.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _log_model(mlflow, model: nn.Module, example: torch.Tensor) -> None:
    import mlflow.pytorch

    model.eval()
    # Explicit requirements: inferring them imports and probes the whole environment.
    mlflow.pytorch.log_model(
        model,
        name="model",
        input_example=example.numpy(),
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )


def main() -> None:
    summary = train(load_params())
    print(f"train: val_psnr {summary['val_psnr']:.2f} dB, checkpoint {MODEL_PATH}")


if __name__ == "__main__":
    run_main(main)
