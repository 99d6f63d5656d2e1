"""Stage, train: one training engine for every model in `pipeline/models.py`.

The same data, split, metric and budget for every model, so they can be compared:

- Optimisation: AdamW, a linear warm-up then cosine decay to 0 (per step), gradient
  clipping; on CUDA, bfloat16 autocast and channels_last.
- Data: the split's images at working resolution, held as tensors (1,000 images of
  64x64 are 12 MB): no JPEG decode or Lab conversion repeats per epoch. Each sample gets
  a random crop (`train.crop`) and a horizontal flip.
- Order: a DistributedSampler over the training set (one process or many), or, with
  `train.hard_examples` > 0, a weighted sample that draws the images with the highest
  recent loss more often (the first seed's "reinforce learning on difficult data"). The
  per-image loss table is kept either way and written to `reports/train_loss_table.csv`.
- gan: L1 pretraining of the generator for `train.gan.pretrain_epochs`, then WGAN-GP
  (one critic step and two generator steps per batch, generator loss
  lambda_L1 * L1 + adversarial); the critic's Wasserstein estimate and gradient penalty
  are logged.
- Checkpoints (pipeline/checkpoint.py: the keys, the atomic write, the safe loader):
  every epoch the model, optimizer(s), scheduler, epoch, RNG states and the resolved
  params go to `models/checkpoints/last.pt` (not a DVC output, so DVC does not delete
  it), before that epoch is logged to MLflow. An interrupted run (Ctrl-C, kill -9, a full
  disk) resumes from it when the params and data are the same; on CPU with
  `train.deterministic` it ends with the same weights as an uninterrupted run (a test
  checks this). It is removed when training completes.
- MLflow on resume: the checkpoint's run continues if the store still has it; if not
  (mlflow.db moved away, another MLFLOW_TRACKING_URI) a new run tagged
  `resumed_from_run_id` takes over, and one line says so. Either way the completed
  epochs' metrics the run lacks are logged from the checkpoint's history, so every
  epoch's curve is whole, each epoch once.
- The store is checked before any work (`tracking.check_store`): an unreachable server
  or a corrupt mlflow.db is a one-line error in seconds.
- Distributed: `train.nproc` > 1 relaunches this stage under torchrun (DDP, gloo on CPU,
  NCCL on CUDA). Only rank 0 logs and writes files; the ranks' final weights are
  compared and the checksums recorded. gan averages its gradients across ranks itself
  (its gradient penalty needs double backward, which DDP does not support).

Outputs (rank 0):
- `models/model.pt`: `model`, `optimizer` (and `critic_optimizer`), `lr_scheduler`,
  `epoch`, `rng` and `args` (the params); read it with `pipeline.checkpoint.load_model`.
  Nothing run-specific (no run id, no time).
- `reports/train_history.csv`: per-epoch losses, val PSNR, lr, seconds (DVC plots).
- `reports/train.json`: final numbers and the MLflow run id (DVC metrics).
- `reports/train_loss_table.csv`: per training image, its last loss and times drawn.
- An MLflow run: flat params, per-epoch metrics, a sample grid per epoch, the model.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from pipeline import checkpoint, tracking
from pipeline.colour import compose, normalise_ab, normalise_l
from pipeline.data import load_split
from pipeline.errors import UserError, run_main
from pipeline.grid import save_grid
from pipeline.metrics import psnr_uint8
from pipeline.models import build_model, count_parameters, predict_ab
from pipeline.params import load_params

MODEL_PATH = Path("models/model.pt")
RESUME_PATH = Path("models/checkpoints/last.pt")
HISTORY = Path("reports/train_history.csv")
REPORT = Path("reports/train.json")
GRID = Path("reports/train_grid.png")
LOSS_TABLE = Path("reports/train_loss_table.csv")


# ------------------------------------------------------------------------ processes

@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch_with_torchrun(nproc: int) -> int:
    """Run this stage again under torchrun with `nproc` processes; its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "pipeline.train"]
    print("train: " + " ".join(cmd[1:]))
    return subprocess.call(cmd)


def init_distributed(device: torch.device) -> Dist:
    if not under_torchrun():
        return Dist()
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))


def pick_device(cfg: dict) -> torch.device:
    want = cfg["device"]
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("train.device: cuda asked for, but torch sees no GPU; use auto or cpu")
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


# ------------------------------------------------------------------------ schedule, data

def warmup_cosine(warmup_steps: int, total_steps: int):
    """LambdaLR factor: linear from 1/warmup to 1 over the warm-up, then cosine to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def augment(x: torch.Tensor, y: torch.Tensor, crop: int, gen: torch.Generator,
            idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random crop of side `crop` (0 = none) and a horizontal flip per sample, of the
    samples `idx` of x and y (all of them by default).

    Each sample's window is copied straight from the full tensors into the batch (one
    copy per sample; gathering the batch first and cropping it with index tensors cost
    ~10% of a cnn step: bench/suite.py, train_step). The draws (top, left, flip) are
    the same as ever, so batches are bit-identical for a seed."""
    n_all, _, h, w = x.shape
    idx = torch.arange(n_all) if idx is None else idx
    n = len(idx)
    side_h, side_w = (crop, crop) if crop and crop < h else (h, w)
    if crop and crop < h:
        top = torch.randint(0, h - crop + 1, (n,), generator=gen).tolist()
        left = torch.randint(0, w - crop + 1, (n,), generator=gen).tolist()
    else:
        top = left = [0] * n
    flip = (torch.rand(n, generator=gen) < 0.5).tolist()
    bx = torch.empty((n, x.shape[1], side_h, side_w), dtype=x.dtype)
    by = torch.empty((n, y.shape[1], side_h, side_w), dtype=y.dtype)
    for k, (i, t, l, f) in enumerate(zip(idx.tolist(), top, left, flip)):
        wx, wy = x[i, :, t : t + side_h, l : l + side_w], y[i, :, t : t + side_h, l : l + side_w]
        bx[k], by[k] = (wx.flip(-1), wy.flip(-1)) if f else (wx, wy)
    return bx, by


class LossTable:
    """The latest training loss of every training image, and how often each was drawn."""

    def __init__(self, n: int):
        self.loss = torch.full((n,), float("nan"))
        self.drawn = torch.zeros(n, dtype=torch.long)

    def update(self, idx: torch.Tensor, losses: torch.Tensor) -> None:
        self.loss[idx] = losses.detach().float().cpu()
        self.drawn += torch.bincount(idx, minlength=len(self.drawn))

    def weights(self, strength: float) -> torch.Tensor:
        """Sampling weight (loss / mean loss) ** strength; unseen images count as average."""
        known = self.loss[~self.loss.isnan()]
        mean = known.mean() if len(known) else torch.tensor(1.0)
        rel = torch.nan_to_num(self.loss / mean.clamp_min(1e-12), nan=1.0).clamp_min(1e-3)
        return rel**strength


def epoch_indices(n: int, epoch: int, seed: int, d: Dist, table: LossTable, strength: float) -> torch.Tensor:
    """This rank's training indices for one epoch. Uniform: a DistributedSampler (every
    image once, shuffled by seed + epoch). Hard examples: n draws with replacement,
    weighted by the loss table, split across ranks the same way."""
    if strength <= 0:
        sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=d.world, rank=d.rank,
                                                      shuffle=True, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    drawn = torch.multinomial(table.weights(strength), n, replacement=True, generator=gen)
    per_rank = math.ceil(n / d.world)
    drawn = torch.cat([drawn, drawn[: per_rank * d.world - n]])  # pad like DistributedSampler
    return drawn[d.rank :: d.world]


# ------------------------------------------------------------------------ checkpoints

def fingerprint(params: dict) -> str:
    """What a resumable run must share with the interrupted one: the train params, the
    working resolution, the split and (zhang) the priors."""
    h = hashlib.sha256(json.dumps({"train": params["train"], "size": params["ingest"]["image_size"],
                                   "format": checkpoint.FORMAT}, sort_keys=True).encode())
    from pipeline.priors import PRIORS
    from pipeline.split import MANIFEST

    for path in (MANIFEST, PRIORS):
        if Path(path).exists():
            h.update(Path(path).read_bytes())
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


def resume_state(key: str, d: Dist) -> dict | None:
    """The resume checkpoint, if there is one from the same params and data (its
    fingerprint is `key`); None to start afresh. Read onto the CPU: load_state_dict
    moves weights and optimizer states to the model's device, and RNG states must be CPU
    tensors."""
    if not RESUME_PATH.exists():
        return None
    try:
        ckpt = checkpoint.load(RESUME_PATH)
    except UserError as e:  # e.g. written by an older version of this code
        if d.main:
            print(f"train: cannot resume: {e}; starting afresh")
        return None
    if ckpt.get("fingerprint") != key:
        if d.main:
            print(f"train: {RESUME_PATH} is from other params or data; starting afresh")
        return None
    if d.main:
        print(f"train: resuming from {RESUME_PATH} after epoch {ckpt['epoch']}")
    return ckpt


# ------------------------------------------------------------------------ MLflow

def start_run(mlflow, run_id: str | None, cfg: dict, done_epochs: int):
    """(the run to log to, whether it is new). A resumed training continues the
    checkpoint's run `run_id`; if the store no longer has it, a new run takes over,
    tagged with the old id, rather than failing on every rerun."""
    tags = tracking.run_tags({"model": cfg["model"]})
    if run_id is None:
        return mlflow.start_run(tags=tags), True
    if tracking.run_exists(run_id):
        return mlflow.start_run(run_id=run_id), False
    run = mlflow.start_run(tags={**tags, "resumed_from_run_id": run_id})
    print(f"train: MLflow run {run_id} of {RESUME_PATH} is not in the store {mlflow.get_tracking_uri()} "
          f"(moved, deleted, or another MLFLOW_TRACKING_URI); resuming the weights after epoch {done_epochs} "
          f"in new run {run.info.run_id} (tag resumed_from_run_id), epochs 1-{done_epochs} logged from the checkpoint")
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


# ------------------------------------------------------------------------ the loop

class LossOf(nn.Module):
    """model.loss as a forward, so DDP sees the call and synchronises the gradients."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        return self.model.loss(L, ab, per_image=True)


def grid_rows(L: torch.Tensor, ab: torch.Tensor, truth: np.ndarray) -> list[tuple]:
    gray = compose(L, torch.zeros_like(ab))
    pred = compose(L, ab)
    return [(gray[i], pred[i], truth[i]) for i in range(len(L))]


@torch.no_grad()
def evaluate_loss(model: nn.Module, L: torch.Tensor, ab: torch.Tensor, batch_size: int, device) -> float:
    was = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(L), batch_size):
        x, y = L[start : start + batch_size].to(device), ab[start : start + batch_size].to(device)
        total += model.loss(x, y, per_image=True).sum().item()
    model.train(was)
    return total / len(L)


def _optimizers(model: nn.Module, cfg: dict):
    """AdamW for the model (the generator for gan); gan's critic gets its own, with the
    WGAN-GP paper's betas (0, 0.9)."""
    is_gan = hasattr(model, "critic")
    main_params = model.generator.parameters() if is_gan else model.parameters()
    opt = torch.optim.AdamW(main_params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    critic_opt = None
    if is_gan:
        critic_opt = torch.optim.AdamW(model.critic.parameters(), lr=cfg["gan"]["critic_lr"], betas=(0.0, 0.9),
                                       weight_decay=0.0)
    return opt, critic_opt


def _clip(params, max_norm: float) -> None:
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def train(params: dict) -> dict:
    cfg = params["train"]
    device = pick_device(cfg)
    d = init_distributed(device)
    threads = max(1, cfg["threads"] // d.world) if cfg["threads"] else 0  # the ranks share the cores
    set_determinism(cfg["seed"], threads, cfg["deterministic"])
    train_data, val_data = load_split("train"), load_split("val")
    L_train = normalise_l(train_data.L)[:, None]
    ab_train = normalise_ab(train_data.ab).permute(0, 3, 1, 2).contiguous()
    L_val = normalise_l(val_data.L)[:, None]
    ab_val = normalise_ab(val_data.ab).permute(0, 3, 1, 2).contiguous()
    n = len(L_train)

    model = build_model(cfg).to(device)  # zhang reads data/priors/priors.npz (the priors stage)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    is_gan = hasattr(model, "critic")
    opt, critic_opt = _optimizers(model, cfg)
    per_rank = math.ceil(n / d.world)
    steps_per_epoch = math.ceil(per_rank / cfg["batch_size"])
    total = cfg["epochs"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg["warmup_epochs"] * steps_per_epoch, total))
    table = LossTable(n)
    history: list[dict] = []
    start_epoch, run_id = 1, None

    key = fingerprint(params)
    ckpt = resume_state(key, d)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["lr_scheduler"])
        if critic_opt is not None:
            critic_opt.load_state_dict(ckpt["critic_optimizer"])
        table.loss, table.drawn = ckpt["loss_table"], ckpt["drawn"]
        set_rng_state(ckpt["rng"])
        history = json.loads(ckpt["history"])
        start_epoch, run_id = ckpt["epoch"] + 1, ckpt["mlflow_run_id"] or None

    loss_of = LossOf(model)
    # gan's generator and critic take turns with two optimisers, and the gradient
    # penalty differentiates through the critic twice, which DDP does not support; so
    # gan averages gradients across ranks itself (all-reduce before each step, exactly
    # what DDP does) and broadcasts batch-norm buffers from rank 0 like DDP.
    manual_sync = is_gan and d.world > 1
    if d.world > 1 and not is_gan:
        loss_of = nn.parallel.DistributedDataParallel(loss_of, device_ids=[device.index] if cuda else None)
    if manual_sync:
        _broadcast(list(model.parameters()) + list(model.buffers()))
    autocast = autocast_for(device)

    mlflow = tracking.setup() if d.main else None
    run_ctx, new_run = start_run(mlflow, run_id, cfg, start_epoch - 1) if d.main else (_Null(), False)
    n_params = count_parameters(model)
    with run_ctx as run:
        if new_run:
            mlflow.log_params(tracking.flat_params("train", cfg))
            if cfg["model"] == "zhang":
                mlflow.log_params(tracking.flat_params("priors", params["priors"]))
            mlflow.log_params({"ingest.image_size": params["ingest"]["image_size"], "n_train": n,
                               "n_val": len(L_val), "n_params": n_params, "world_size": d.world,
                               "device": device.type})
        if d.main:
            log_missing_epochs(mlflow, run.info.run_id, history)
        for epoch in range(start_epoch, cfg["epochs"] + 1):
            t0 = time.perf_counter()
            idx_all = epoch_indices(n, epoch, cfg["seed"], d, table, cfg["hard_examples"])
            aug_gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + epoch * 101 + d.rank)
            adversarial = is_gan and epoch > cfg["gan"]["pretrain_epochs"]
            sums = {"train_loss": 0.0, "critic_wasserstein": 0.0, "gradient_penalty": 0.0}
            bar = tqdm(range(steps_per_epoch), desc=f"train epoch {epoch}/{cfg['epochs']}", unit="batch",
                       leave=False, disable=not d.main)
            for step in bar:
                idx = idx_all[step * cfg["batch_size"] : (step + 1) * cfg["batch_size"]]
                x, y = next_batch(L_train, ab_train, idx, cfg["crop"], aug_gen, device)
                if manual_sync:
                    _broadcast(list(model.buffers()))
                losses, stats = train_step(model, loss_of, opt, critic_opt, x, y, cfg, autocast, d,
                                           adversarial, manual_sync)
                if stats is not None:
                    sums["critic_wasserstein"] += stats[0] * len(idx)
                    sums["gradient_penalty"] += stats[1] * len(idx)
                sched.step()
                table.update(_gather(idx, d), _gather(losses.detach().float().cpu(), d))
                sums["train_loss"] += losses.detach().float().sum().item()
                bar.set_postfix(loss=f"{losses.detach().float().mean().item():.4f}")
            seconds = time.perf_counter() - t0
            if not d.main:
                continue
            val_loss = evaluate_loss(model, L_val, ab_val, cfg["batch_size"], device)
            val_pred = predict_ab(model.cpu(), val_data.L)
            model.to(device)
            val_psnr = float(psnr_uint8(compose(val_data.L, val_pred), val_data.rgb).mean())
            row = {"epoch": epoch, "train_loss": sums["train_loss"] / len(idx_all),
                   "val_loss": val_loss, "val_psnr": val_psnr, "lr": sched.get_last_lr()[0], "seconds": seconds}
            if is_gan:
                row["critic_wasserstein"] = sums["critic_wasserstein"] / len(idx_all) if adversarial else float("nan")
                row["gradient_penalty"] = sums["gradient_penalty"] / len(idx_all) if adversarial else float("nan")
            history.append(row)
            # The checkpoint first, then MLflow: an epoch is logged only once it is safe,
            # and a resume logs whatever the run lacks (log_missing_epochs), so each
            # completed epoch is logged exactly once, whenever the run was cut short.
            checkpoint.save(RESUME_PATH, {**_state(model, opt, critic_opt, sched, epoch, params), "fingerprint": key,
                                          "loss_table": table.loss, "drawn": table.drawn,
                                          "history": json.dumps(history), "mlflow_run_id": run.info.run_id})
            log_epoch(mlflow, row)
            k = min(8, len(val_data.L))
            grid = save_grid(grid_rows(val_data.L[:k], val_pred[:k], val_data.rgb[:k]), GRID)
            mlflow.log_image(np.asarray(grid), artifact_file=f"grids/epoch_{epoch:03d}.png")
            print(f"epoch {epoch}: train_loss {row['train_loss']:.4f} val_loss {val_loss:.4f} "
                  f"val_psnr {val_psnr:.2f} dB ({seconds:.1f}s)")

        checksums = _rank_checksums(model, d)
        if not d.main:
            return {}
        checkpoint.save(MODEL_PATH, _state(model, opt, critic_opt, sched, cfg["epochs"], params))
        mlflow.log_artifact(str(GRID))
        _log_model(mlflow, model.cpu(), L_val[:1])
        LOSS_TABLE.parent.mkdir(exist_ok=True)
        pd.DataFrame({"id": train_data.rows["id"], "relpath": train_data.rows["relpath"],
                      "loss": table.loss.numpy(), "drawn": table.drawn.numpy()}).to_csv(
            LOSS_TABLE, index=False, float_format="%.5f")
        mlflow.log_artifact(str(LOSS_TABLE))
        summary = {
            "model": cfg["model"],
            "train_loss": history[-1]["train_loss"],
            "val_loss": history[-1]["val_loss"],
            "val_psnr": history[-1]["val_psnr"],
            "n_params": n_params,
            "seconds_per_epoch": float(np.median([h["seconds"] for h in history])),
            "world_size": d.world,
            "rank_checksums": checksums,
            "mlflow_run_id": run.info.run_id,
        }
    HISTORY.parent.mkdir(exist_ok=True)
    pd.DataFrame(history).to_csv(HISTORY, index=False)
    REPORT.write_text(json.dumps(summary, indent=2) + "\n")
    RESUME_PATH.unlink(missing_ok=True)  # done: nothing to resume
    return summary


def autocast_for(device: torch.device):
    """bfloat16 mixed precision on CUDA (no loss scaling needed); full float32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def next_batch(L: torch.Tensor, ab: torch.Tensor, idx: torch.Tensor, crop: int, gen: torch.Generator,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training input pipeline: the images at `idx` from the in-memory split,
    augmented, on the device (channels_last on CUDA). bench/suite.py times this against
    a seed-style Dataset and checks the model does not wait on it."""
    x, y = augment(L, ab, crop, gen, idx)
    x, y = x.to(device), y.to(device)
    if device.type == "cuda":
        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    return x, y


def train_step(model, loss_of, opt, critic_opt, x, y, cfg: dict, autocast, d: Dist, adversarial: bool,
               manual_sync: bool) -> tuple[torch.Tensor, tuple[float, float] | None]:
    """One optimisation step on one batch: (per-image losses, gan's (Wasserstein
    estimate, gradient penalty) or None). The scheduler step is the caller's."""
    if adversarial:
        return _gan_step(model, opt, critic_opt, x, y, cfg, autocast, d)
    is_gan = hasattr(model, "critic")
    with autocast:
        losses = loss_of(x, y)
    opt.zero_grad(set_to_none=True)
    losses.mean().backward()
    if manual_sync:
        _average_gradients(model.generator.parameters(), d)
    _clip(model.generator.parameters() if is_gan else model.parameters(), cfg["grad_clip"])
    opt.step()
    return losses, None


def _state(model, opt, critic_opt, sched, epoch: int, params: dict) -> dict:
    """What a checkpoint holds (pipeline/checkpoint.py's keys), RNG states included."""
    state = dict(model=model.state_dict(), optimizer=opt.state_dict(), lr_scheduler=sched.state_dict(),
                 epoch=epoch, args=params, rng=rng_state())
    if critic_opt is not None:
        state["critic_optimizer"] = critic_opt.state_dict()
    return state


def _gan_step(model, opt, critic_opt, x, y, cfg, autocast, d: Dist) -> tuple[torch.Tensor, tuple[float, float]]:
    """One WGAN-GP step: one critic update, then two generator updates."""
    from pipeline.models import critic_loss, generator_adversarial_loss

    g = cfg["gan"]
    with torch.no_grad(), autocast:
        fake = model.generator(x)
    real_pair, fake_pair = torch.cat([x, y], 1), torch.cat([x, fake.float()], 1)
    c_loss, wasserstein, gp = critic_loss(model.critic, real_pair, fake_pair, g["lambda_gp"])
    critic_opt.zero_grad(set_to_none=True)
    c_loss.backward()
    _average_gradients(model.critic.parameters(), d)
    _clip(model.critic.parameters(), cfg["grad_clip"])
    critic_opt.step()
    for _ in range(2):
        with autocast:
            pred = model.generator(x)
            l1 = (pred.float() - y).abs().mean((1, 2, 3))
            adv = generator_adversarial_loss(model.critic, torch.cat([x, pred.float()], 1))
        loss = g["lambda_l1"] * l1.mean() + adv
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _average_gradients(model.generator.parameters(), d)
        _clip(model.generator.parameters(), cfg["grad_clip"])
        opt.step()
    model.critic.zero_grad(set_to_none=True)  # the generator steps left gradients there
    return l1.detach(), (float(wasserstein), float(gp))


def _average_gradients(params, d: Dist) -> None:
    """Mean of each gradient over the ranks (what DDP's reducer does), in place."""
    if d.world == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= d.world


def _broadcast(tensors) -> None:
    """Rank 0's values everywhere (DDP's start-up and per-step buffer broadcast)."""
    import torch.distributed as dist

    for t in tensors:
        dist.broadcast(t.data, 0)


def _gather(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Concatenate a tensor from every rank (identity in one process)."""
    if d.world == 1:
        return t
    import torch.distributed as dist

    parts = [None] * d.world
    dist.all_gather_object(parts, t)
    return torch.cat(parts)


def _rank_checksums(model: nn.Module, d: Dist) -> list[str]:
    """SHA-256 of each rank's final weights (parameters; batch-norm running statistics
    are per-rank between DDP's broadcasts); DDP must have kept them identical."""
    digest = hashlib.sha256()
    for k, v in sorted(model.named_parameters()):
        digest.update(k.encode())
        digest.update(v.detach().cpu().contiguous().numpy().tobytes())
    mine = digest.hexdigest()
    if d.world == 1:
        return [mine]
    import torch.distributed as dist

    all_sums = [None] * d.world
    dist.all_gather_object(all_sums, mine)
    return all_sums


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


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
    params = load_params()
    tracking.check_store()  # before any work: an unreachable store fails now, in one line
    nproc = params["train"]["nproc"]
    if nproc > 1 and not under_torchrun():
        code = relaunch_with_torchrun(nproc)
        if code:
            raise UserError(f"train: torchrun with {nproc} processes failed (exit {code}); see the output above")
        return
    summary = train(params)
    if summary:
        print(f"train: val_psnr {summary['val_psnr']:.2f} dB, checkpoint {MODEL_PATH}")
    if under_torchrun():
        import torch.distributed as dist

        dist.destroy_process_group()


if __name__ == "__main__":
    run_main(main)
