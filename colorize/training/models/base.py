"""What every colorization model is: the interface the training engine relies on, and the
layers several models share.

    model.loss(L, ab) -> scalar         the training loss for a batch: normalised L
                                        (n, 1, H, W) and ab (n, 2, H, W) (colour.py);
                                        per_image=True gives each image's loss, (n,),
                                        for the engine's loss table
    model.predict(L) -> ab              normalised ab (n, 2, H, W) at the input's size
    model.configure_optimizers(cfg)     {"model": optimizer, ...}: the engine's
                                        schedule drives the first
    model.training_step(x, y, opt, ctx) one optimisation step on one batch: (per-image
                                        losses, {metric: value}); `ctx` brings the
                                        autocast, the clipping, the epoch and the
                                        gradient averaging across ranks

The defaults here are one AdamW and one backward of `loss`; a model that trains
otherwise (gan: a critic and a generator taking turns) overrides the last two, so the
engine never needs to know which model it trains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class StepContext:
    """What the engine gives a training step."""

    cfg: dict  # the validated train params
    epoch: int  # 1-based
    autocast: object  # a context manager: bf16 on CUDA, a no-op on CPU
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # per-image loss; DDP-wrapped when it syncs
    reduce_gradients: Callable[[object], None]  # mean over the ranks, for models that sync by hand


class ColorizationModel(nn.Module):
    """Base of every model: the default optimiser and training step."""

    manual_gradient_sync = False  # True: DDP cannot wrap it; the step calls ctx.reduce_gradients
    epoch_metrics: tuple[str, ...] = ()  # per-epoch means the step reports (NaN when it reports none)

    def configure_optimizers(self, cfg: dict) -> dict[str, torch.optim.Optimizer]:
        return {"model": torch.optim.AdamW(self.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])}

    def training_step(self, x: torch.Tensor, y: torch.Tensor, optimizers: dict, ctx: StepContext,
                      params=None) -> tuple[torch.Tensor, dict[str, float]]:
        """One AdamW step on the mean of ctx.loss; `params` are what it trains (all by default)."""
        params = list(self.parameters() if params is None else params)
        with ctx.autocast:
            losses = ctx.loss(x, y)
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        losses.mean().backward()
        ctx.reduce_gradients(params)
        clip(params, ctx.cfg["grad_clip"])
        opt.step()
        return losses, {}


def clip(params, max_norm: float) -> None:
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def reduce_loss(err: torch.Tensor, per_image: bool) -> torch.Tensor:
    """The mean of a per-element loss: per image (n,) for the loss table, else one scalar."""
    return err.flatten(1).mean(1) if per_image else err.mean()


class Regression(ColorizationModel):
    """A net whose forward() is normalised ab at the input's resolution."""

    def loss(self, L: torch.Tensor, ab: torch.Tensor, per_image: bool = False) -> torch.Tensor:
        # L1, not L2: less pull toward the desaturated mean colour
        return reduce_loss(F.l1_loss(self(L), ab, reduction="none"), per_image)

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        return self(L)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """2 x (3x3 conv, batch norm, ReLU): the U-Net's unit of work at one scale."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv, batch norm, ReLU: one layer of the resnet head and the plain CNN. No conv
    bias: the batch norm's shift makes it redundant."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


# ------------------------------------------------------------------------ resnet
