"""The training engine: one loop for every model in colorize/training/models, so they
can be compared on the same data, split, metric and budget.

- Optimisation: the model's own optimisers (`configure_optimizers`: AdamW by default)
  and step (`training_step`), a linear warm-up then cosine decay to 0 (per step) on the
  first optimiser, gradient clipping; on CUDA, bfloat16 autocast and channels_last.
- Data (colorize/training/batches.py): the split's images as tensors, a random crop and
  flip per sample; every image once per epoch, or hard examples drawn more often.
- Checkpoints (colorize/training/checkpoint.py): every epoch, before that epoch is
  logged, `models/checkpoints/last.pt` (not a DVC output, so DVC does not delete it).
  An interrupted run (Ctrl-C, kill -9, a full disk) resumes from it when the params and
  data are the same; on CPU with `train.deterministic` it ends with the same weights as
  an uninterrupted run. It is removed when training completes.
- MLflow: flat params, per-epoch metrics and a sample grid, the model. A resumed run
  continues the checkpoint's MLflow run; if the store no longer has it, a new run tagged
  `resumed_from_run_id` takes over, and the completed epochs are logged from the
  checkpoint's history, each exactly once.
- Distributed (colorize/training/distributed.py): under torchrun, DDP wraps the loss,
  except for models that sync by hand (`manual_gradient_sync`). Rank 0 logs and writes.

    summary = train(params)    # writes models/model.pt and the train reports
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from colorize.common import paths, tracking
from colorize.common.colour import compose
from colorize.common.errors import UserError
from colorize.common.files import atomic_write, write_json
from colorize.common.grid import comparison_rows, save_grid
from colorize.common.params import model_args
from colorize.evaluation.metrics import psnr_uint8
from colorize.training import checkpoint
from colorize.training.batches import LossTable, batch_stream, epoch_indices, hard_tag_weights
from colorize.training.distributed import Dist, init_distributed
from colorize.training.loader import StreamedSplit, open_split
from colorize.training.models import build_model, count_parameters, needs_priors, predict_ab
from colorize.training.models.base import ColorizationModel, StepContext

GRID_IMAGES = 8  # validation images in the per-epoch grid


# ------------------------------------------------------------------------ set-up

def pick_device(cfg: dict) -> torch.device:
    want = cfg["device"]
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("train.device: cuda asked for, but torch sees no GPU; use auto or cpu")
        import os

        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def set_determinism(seed: int, threads: int, deterministic: bool) -> None:
    """Seeded, and with `deterministic` bit-reproducible on CPU: same data + params ->
    same weights (on CUDA, as far as the kernels allow)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.benchmark = not deterministic


def autocast_for(device: torch.device):
    """bfloat16 mixed precision on CUDA (no loss scaling needed); full float32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LambdaLR factor: linear from 1/warmup to 1 over the warm-up, then cosine to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


class LossOf(nn.Module):
    """model.loss per image as a forward, so DDP sees the call and syncs the gradients."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        return self.model.loss(L, ab, per_image=True)


# ------------------------------------------------------------------------ resume state

@dataclass
class Progress:
    """What survives an interruption besides the weights: the loss table, the history,
    and the MLflow run."""

    table: LossTable
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 1
    run_id: str | None = None


def fingerprint(params: dict) -> str:
    """What a resumable run must share with the interrupted one: the train params, the
    working resolution, the split and (zhang) the priors. Not node 0's address: a
    restart from another address resumes."""
    train = {k: v for k, v in params["train"].items() if k != "rdzv_endpoint"}
    h = hashlib.sha256(json.dumps({"train": train, "size": params["ingest"]["image_size"],
                                   "format": checkpoint.FORMAT}, sort_keys=True).encode())
    for path in (paths.SPLIT_MANIFEST, paths.PRIORS):
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def optimizer_key(name: str) -> str:
    """The checkpoint key of an optimiser: `optimizer` for the model's, `<name>_optimizer` else."""
    return "optimizer" if name == "model" else f"{name}_optimizer"


def state_of(model, optimizers: dict, sched, epoch: int, params: dict) -> dict:
    """What a checkpoint holds (colorize/training/checkpoint.py's keys), RNG states included."""
    state = dict(model=model.state_dict(), lr_scheduler=sched.state_dict(), epoch=epoch, args=model_args(params),
                 rng=rng_state())
    state.update({optimizer_key(name): opt.state_dict() for name, opt in optimizers.items()})
    return state


def same_everywhere(key: str, d: Dist) -> None:
    """Every rank trains on rank 0's params and data (fingerprint `key`): another node's
    clone can lag behind. Checked on every rank, so that all of them stop and none waits."""
    keys = d.collect(key)
    differ = [rank for rank, k in enumerate(keys) if k != keys[0]]
    if differ:
        raise UserError(f"train: ranks {differ} have other params.yaml or data than rank 0: check out the same "
                        "commit and run `dvc repro priors` (or dvc pull) on every node")


def resume_checkpoint(key: str) -> dict | None:
    """The resume checkpoint if it is one of this training (fingerprint `key`), else None."""
    if not paths.RESUME.exists():
        return None
    try:
        ckpt = checkpoint.load(paths.RESUME)
    except UserError as e:  # e.g. written by an older version of this code
        print(f"train: cannot resume: {e}; starting afresh")
        return None
    if ckpt.get("fingerprint") != key:
        print(f"train: {paths.RESUME} is from other params or data; starting afresh")
        return None
    print(f"train: resuming from {paths.RESUME} after epoch {ckpt['epoch']}")
    return ckpt


def resume(key: str, d: Dist, model, optimizers: dict, sched, progress: Progress) -> None:
    """Load the resume checkpoint into everything, if it is from the same params and data
    (its fingerprint is `key`). Rank 0 reads it and sends it to every rank: the other
    nodes have no resume file (or a stale one), and every rank must start from the same
    epoch. Read onto the CPU: load_state_dict moves weights and optimizer states to the
    model's device, and RNG states must be CPU tensors."""
    ckpt = d.share(resume_checkpoint(key) if d.main else None)
    if ckpt is None:
        return
    model.load_state_dict(ckpt["model"])
    for name, opt in optimizers.items():
        opt.load_state_dict(ckpt[optimizer_key(name)])
    sched.load_state_dict(ckpt["lr_scheduler"])
    progress.table.loss, progress.table.drawn = ckpt["loss_table"], ckpt["drawn"]
    set_rng_state(ckpt["rng"])
    progress.history = json.loads(ckpt["history"])
    progress.start_epoch, progress.run_id = ckpt["epoch"] + 1, ckpt["mlflow_run_id"] or None


# ------------------------------------------------------------------------ MLflow

def start_run(mlflow, progress: Progress, cfg: dict):
    """(the run to log to, whether it is new). A resumed training continues the
    checkpoint's run; if the store no longer has it, a new run takes over, tagged with
    the old id, rather than failing on every rerun."""
    tags = tracking.run_tags({"model": cfg["model"]})
    run_id, done = progress.run_id, progress.start_epoch - 1
    if run_id is None:
        return mlflow.start_run(tags=tags), True
    if tracking.run_exists(run_id):
        return mlflow.start_run(run_id=run_id), False
    run = mlflow.start_run(tags={**tags, "resumed_from_run_id": run_id})
    print(f"train: MLflow run {run_id} of {paths.RESUME} is not in the store {mlflow.get_tracking_uri()} "
          f"(moved, deleted, or another MLFLOW_TRACKING_URI); resuming the weights after epoch {done} "
          f"in new run {run.info.run_id} (tag resumed_from_run_id), epochs 1-{done} logged from the checkpoint")
    return run, True


def log_epoch(mlflow, row: dict) -> None:
    mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch" and not math.isnan(v)}, step=row["epoch"])


def log_missing_epochs(mlflow, run_id: str, history: list[dict]) -> None:
    """Log the completed epochs (the checkpoint's history) that the run lacks: all of
    them for a new run, the last one if the run was cut short between the checkpoint
    and its logging."""
    logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "train_loss")}
    for row in history:
        if row["epoch"] not in logged:
            log_epoch(mlflow, row)


def log_model(mlflow, model: nn.Module, example: torch.Tensor) -> None:
    import mlflow.pytorch

    model.eval()
    # Explicit requirements: inferring them imports and probes the whole environment.
    mlflow.pytorch.log_model(model, name="model", input_example=example.numpy(),
                             pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])


class _NoRun:  # the MLflow run of the ranks that do not log
    info = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------------ the loop

def train(params: dict) -> dict:
    """Train the model params.yaml names; rank 0 writes the checkpoint and the reports and
    returns the summary (other ranks return {})."""
    cfg = params["train"]
    device = pick_device(cfg)
    d = init_distributed(device)
    # train.threads are per machine: shared by this machine's processes (each node has its own cores)
    set_determinism(cfg["seed"], max(1, cfg["threads"] // d.local_world) if cfg["threads"] else 0,
                    cfg["deterministic"])
    train_data, val_data = open_split("train"), open_split("val")  # streamed: memory flat in n
    n = len(train_data)
    model = build_model(cfg).to(device)  # zhang, unet's bins head: data/priors/priors.npz (the priors stage)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizers = model.configure_optimizers(cfg)
    steps = math.ceil(math.ceil(n / d.world) / cfg["batch_size"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizers["model"], warmup_cosine(cfg["warmup_epochs"] * steps, cfg["epochs"] * steps))
    progress = Progress(LossTable(n))
    key = fingerprint(params)
    same_everywhere(key, d)
    resume(key, d, model, optimizers, sched, progress)
    loss = LossOf(model)
    if d.world > 1 and not model.manual_gradient_sync:
        loss = nn.parallel.DistributedDataParallel(loss, device_ids=[device.index] if device.type == "cuda" else None)
    if model.manual_gradient_sync:
        d.broadcast(list(model.parameters()) + list(model.buffers()))
    reduce = d.average_gradients if model.manual_gradient_sync else (lambda params: None)

    mlflow = tracking.setup() if d.main else None
    run_ctx, new_run = start_run(mlflow, progress, cfg) if d.main else (_NoRun(), False)
    with run_ctx as run:
        if new_run:
            log_params(mlflow, params, model, n, len(val_data), d, device)
            tracking.log_data(mlflow, paths.SPLIT, "training")  # lineage: DVC's hash of the split
        if d.main:
            log_missing_epochs(mlflow, run.info.run_id, progress.history)
        for epoch in range(progress.start_epoch, cfg["epochs"] + 1):
            ctx = StepContext(cfg, epoch, autocast_for(device), loss, reduce)
            row = run_epoch(model, optimizers, sched, train_data, progress.table, ctx, d, steps, device)
            if d.main:
                end_epoch(mlflow, run, model, optimizers, sched, row, val_data, progress, params, key, device)
        checksums = d.checksums(model)
        if not d.main:
            return {}
        return finish(mlflow, run, model, optimizers, sched, train_data, val_data, progress, params, d, checksums)


def run_epoch(model: ColorizationModel, optimizers: dict, sched, data: StreamedSplit, table: LossTable, ctx: StepContext,
              d: Dist, steps: int, device: torch.device) -> dict:
    """One pass over this rank's share of the training set: the epoch's history row
    (training loss and the model's own epoch metrics; validation comes after)."""
    cfg = ctx.cfg
    t0 = time.perf_counter()
    idx_all = epoch_indices(len(data), ctx.epoch, cfg["seed"], d, table, cfg["hard_examples"],
                            hard_tag_weights(data.rows, cfg["hard_tag_weight"]))
    gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + ctx.epoch * 101 + d.rank)
    sums = dict.fromkeys(("train_loss",) + model.epoch_metrics, 0.0)
    reported: set[str] = set()
    batches = batch_stream(data, idx_all[: steps * cfg["batch_size"]], cfg["batch_size"], cfg["crop"], gen, device)
    bar = tqdm(batches, total=steps, desc=f"train epoch {ctx.epoch}/{cfg['epochs']}", unit="batch", leave=False,
               disable=not d.main)
    for idx, x, y in bar:
        if model.manual_gradient_sync:
            d.broadcast(list(model.buffers()))  # what DDP does before each forward
        losses, stats = model.training_step(x, y, optimizers, ctx)
        sched.step()
        for name, value in stats.items():
            sums[name] += value * len(idx)
            reported.add(name)
        losses = losses.detach().float()
        table.update(d.gather(idx), d.gather(losses.cpu()))
        sums["train_loss"] += losses.sum().item()
        bar.set_postfix(loss=f"{losses.mean().item():.4f}")
    row = {"epoch": ctx.epoch, "train_loss": sums["train_loss"] / len(idx_all), "seconds": time.perf_counter() - t0}
    row.update({k: sums[k] / len(idx_all) if k in reported else float("nan") for k in model.epoch_metrics})
    return row


@torch.no_grad()
def validation_loss(model: nn.Module, data: StreamedSplit, batch_size: int, device) -> float:
    was = model.training
    model.eval()
    total = 0.0
    for idx in data.chunks(batch_size):
        x, y = (t.to(device) for t in data.model_inputs(idx))
        total += model.loss(x, y, per_image=True).sum().item()
    model.train(was)
    return total / len(data)


VAL_CHUNK = 512  # validation images predicted at a time (a multiple of predict_ab's batch: the same bits)


@torch.no_grad()
def validation_psnr(model: nn.Module, data: StreamedSplit) -> tuple[float, tuple]:
    """Mean PSNR of the model on the split, streamed; and the first GRID_IMAGES' (L, ab, rgb)."""
    psnrs, first = [], None
    for idx in data.chunks(VAL_CHUNK):
        rgb, lab = data.rgb_and_lab(idx)
        L = lab[..., 0]
        pred = predict_ab(model, L)
        psnrs.append(psnr_uint8(compose(L, pred), rgb))
        if first is None:
            first = (L[:GRID_IMAGES], pred[:GRID_IMAGES], rgb[:GRID_IMAGES])
    return float(np.concatenate(psnrs).mean()), first


def end_epoch(mlflow, run, model, optimizers, sched, row: dict, val: StreamedSplit, progress: Progress, params: dict,
              key: str, device) -> None:
    """Rank 0 after an epoch: validate, checkpoint, then log (in that order: an epoch is
    logged only once it is safe, and a resume logs what the run lacks)."""
    cfg = params["train"]
    val_loss = validation_loss(model, val, cfg["batch_size"], device)
    val_psnr, shown = validation_psnr(model.cpu(), val)
    model.to(device)
    row = {"epoch": row["epoch"], "train_loss": row["train_loss"], "val_loss": val_loss, "val_psnr": val_psnr,
           "lr": sched.get_last_lr()[0], **{k: v for k, v in row.items() if k not in ("epoch", "train_loss")}}
    progress.history.append(row)
    checkpoint.save(paths.RESUME, {**state_of(model, optimizers, sched, row["epoch"], params), "fingerprint": key,
                                   "loss_table": progress.table.loss, "drawn": progress.table.drawn,
                                   "history": json.dumps(progress.history), "mlflow_run_id": run.info.run_id})
    log_epoch(mlflow, row)
    grid = save_grid(comparison_rows(*shown), paths.TRAIN_GRID)
    mlflow.log_image(np.asarray(grid), artifact_file=f"grids/epoch_{row['epoch']:03d}.png")
    print(f"epoch {row['epoch']}: train_loss {row['train_loss']:.4f} val_loss {row['val_loss']:.4f} "
          f"val_psnr {row['val_psnr']:.2f} dB ({row['seconds']:.1f}s)")


def log_params(mlflow, params: dict, model, n_train: int, n_val: int, d: Dist, device) -> None:
    cfg = params["train"]
    mlflow.log_params(tracking.flat_params("train", cfg))
    if needs_priors(cfg):
        mlflow.log_params(tracking.flat_params("priors", params["priors"]))
    mlflow.log_params({"ingest.image_size": params["ingest"]["image_size"], "n_train": n_train, "n_val": n_val,
                       "n_params": count_parameters(model), "world_size": d.world, "device": device.type})


def finish(mlflow, run, model, optimizers, sched, train_data: StreamedSplit, val: StreamedSplit, progress: Progress,
           params: dict, d: Dist, checksums: list[str]) -> dict:
    """Rank 0 at the end: the checkpoint, the reports, the model in MLflow."""
    cfg, history, table = params["train"], progress.history, progress.table
    checkpoint.save(paths.MODEL, state_of(model, optimizers, sched, cfg["epochs"], params))
    mlflow.log_artifact(str(paths.TRAIN_GRID))
    log_model(mlflow, model.cpu(), val.model_inputs([0])[0])
    losses = pd.DataFrame({"id": train_data.rows["id"], "relpath": train_data.rows["relpath"],
                           "loss": table.loss.numpy(), "drawn": table.drawn.numpy()})
    atomic_write(paths.LOSS_TABLE, lambda tmp: losses.to_csv(tmp, index=False, float_format="%.5f"))
    mlflow.log_artifact(str(paths.LOSS_TABLE))
    summary = {
        "model": cfg["model"],
        "train_loss": history[-1]["train_loss"],
        "val_loss": history[-1]["val_loss"],
        "val_psnr": history[-1]["val_psnr"],
        "n_params": count_parameters(model),
        "seconds_per_epoch": float(np.median([h["seconds"] for h in history])),
        "world_size": d.world,
        "rank_checksums": checksums,
        "mlflow_run_id": run.info.run_id,
    }
    atomic_write(paths.TRAIN_HISTORY, lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))
    write_json(paths.TRAIN_REPORT, summary)
    paths.RESUME.unlink(missing_ok=True)  # done: nothing to resume
    return summary
