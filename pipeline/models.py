"""The colorization networks, behind one interface the training loop relies on:

    model.loss(L, ab) -> scalar    training loss for a batch: normalised L (n, 1, H, W)
                                   and normalised ab (n, 2, H, W) (colour.py)
    model.predict(L) -> ab         normalised ab (n, 2, H, W) at the input's resolution

Regression models (`Regression`) predict ab directly with an L1 loss; `zhang` predicts a
distribution over the quantised ab bins and decodes it. `build_model` makes one from
the train params.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.colour import AB_NORM, decode_annealed, soft_encode


class Regression(nn.Module):
    """A net whose forward() is normalised ab at the input's resolution."""

    def loss(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(self(L), ab)  # L1, not L2: less pull toward the desaturated mean colour

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


class UNet(Regression):
    """U-Net (Ronneberger et al. 2015) regressing ab from L.

    `depth` downsamplings; level i has width * 2**i channels. Upsampling is bilinear
    followed by the conv block, which avoids the checkerboard artefacts of transposed
    convolutions on small images.
    """

    def __init__(self, width: int = 16, depth: int = 3):
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([conv_block(1, widths[0])])
        self.down.extend(conv_block(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(conv_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 2, 1)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        skips = []
        x = L
        for i, block in enumerate(self.down):
            if i:
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
        for block in self.up:
            skip = skips.pop()
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def vgg_block(c_in: int, c_out: int, convs: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """`convs` x (3x3 conv, ReLU), the last with `stride`, then batch norm: a block of
    Zhang et al.'s network (their conv1..conv7)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        last = i == convs - 1
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, stride=stride if last else 1,
                             padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
    layers.append(nn.BatchNorm2d(c_out))
    return nn.Sequential(*layers)


class ZhangNet(nn.Module):
    """Zhang, Isola & Efros, "Colorful Image Colorization" (ECCV 2016), scaled by width.

    Three downsampling blocks (width, 2w, 4w channels; 2, 2, 3 convs) reach 1/8
    resolution; `depth` blocks of 3 convs at 8w follow, the inner ones dilated by 2 for a
    wide receptive field; a transposed conv returns to 1/4 resolution (4w channels) and a
    1x1 conv gives Q logits per pixel. Full size as in the paper: width 64, depth 4
    (conv4..conv7, dilations 1, 2, 2, 1).

    The loss is cross-entropy against the soft-encoded ab of the image shrunk to 1/4
    (5 nearest bins, sigma 5), each pixel weighted by the rebalancing weight of its
    nearest bin when `rebalance`. Prediction is the annealed mean at `temperature`,
    upsampled to the input's resolution (the caller adds the full-resolution L).

    The bins and weights (from the priors stage) are buffers, so a checkpoint carries
    everything needed to decode.
    """

    def __init__(self, bins: torch.Tensor, weights: torch.Tensor, width: int = 16, depth: int = 3,
                 temperature: float = 0.38, rebalance: bool = True):
        super().__init__()
        w, q = width, len(bins)
        blocks = [vgg_block(1, w, 2, stride=2), vgg_block(w, 2 * w, 2, stride=2), vgg_block(2 * w, 4 * w, 3, stride=2)]
        for i in range(depth):
            blocks.append(vgg_block(4 * w if i == 0 else 8 * w, 8 * w, 3, dilation=2 if 0 < i < depth - 1 else 1))
        blocks.append(nn.Sequential(
            nn.ConvTranspose2d(8 * w, 4 * w, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True),
        ))
        self.features = nn.Sequential(*blocks)
        self.classify = nn.Conv2d(4 * w, q, 1)
        self.register_buffer("bins", bins.detach().clone().float())  # (Q, 2) ab centres
        self.register_buffer("class_weights", weights.detach().clone().float())  # (Q,)
        self.temperature = temperature
        self.rebalance = rebalance

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """Logits (n, Q, H/4, W/4)."""
        return self.classify(self.features(L))

    def loss(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        logits = self(L)
        small = F.interpolate(ab * AB_NORM, size=logits.shape[-2:], mode="area")
        target = soft_encode(small, self.bins, dim=1)
        ce = -(target * F.log_softmax(logits, dim=1)).sum(1)  # (n, h, w)
        if self.rebalance:
            ce = ce * self.class_weights[target.argmax(1)]
        return ce.mean()

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        ab = decode_annealed(self(L), self.bins, self.temperature, dim=1) / AB_NORM
        return F.interpolate(ab, size=L.shape[-2:], mode="bilinear", align_corners=False)


MODELS = {"unet": UNet, "zhang": ZhangNet}


def build_model(train_params: dict, priors: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The model named by train.model. zhang needs the priors stage's bins and weights
    (`pipeline.priors.load_priors()`, or a checkpoint's buffers)."""
    name, width, depth = train_params["model"], train_params["width"], train_params["depth"]
    if name == "zhang":
        if priors is None:
            from pipeline.priors import load_priors

            priors = load_priors()
        z = train_params["zhang"]
        return ZhangNet(priors["bins"], priors["weights"], width=width, depth=depth,
                        temperature=z["temperature"], rebalance=z["rebalance"])
    return MODELS[name](width=width, depth=depth)


def checkpoint_priors(state: dict) -> dict[str, torch.Tensor] | None:
    """The bins and weights a zhang checkpoint carries (None for other models)."""
    if "bins" in state and "class_weights" in state:
        return {"bins": state["bins"], "weights": state["class_weights"]}
    return None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def predict_ab(model: nn.Module, L: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """ab (n, H, W, 2) in Lab units for L (n, H, W) in [0, 100]."""
    from pipeline.colour import denormalise_ab, normalise_l

    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(L), batch_size):
        x = normalise_l(L[start : start + batch_size])[:, None]
        out.append(denormalise_ab(model.predict(x)).permute(0, 2, 3, 1))
    model.train(was_training)
    return torch.cat(out)
