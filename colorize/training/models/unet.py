"""The U-Net: the foundation model, with the options of the real-photo study
(docs/quality.md): a global-feature branch, the loss, and a second head over the ab bins."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorize.common.colour import AB_NORM, decode_annealed
from colorize.common.params import UNET_DECODES, UNET_LOSSES
from colorize.training.models.base import Regression, conv_block, reduce_loss
from colorize.training.models.zhang import bins_cross_entropy


class GlobalContext(nn.Module):
    """A feature of the whole image fused into every position (Iizuka et al. 2016, "Let
    there be Color!"): the bottleneck's mean over the image, through a small MLP, is
    appended to every pixel's features and mixed in by a 1x1 conv. A local receptive
    field sees a petal; the global feature says which flower, and so which colours."""

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True),
                                 nn.Linear(channels, channels), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(2 * channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.mlp(x.mean(dim=(2, 3)))[:, :, None, None].expand_as(x)
        return self.fuse(torch.cat([x, g], dim=1))


class UNet(Regression):
    """U-Net (Ronneberger et al. 2015) regressing ab from L.

    `depth` downsamplings; level i has width * 2**i channels. Upsampling is bilinear
    followed by the conv block, which avoids the checkerboard artefacts of transposed
    convolutions on small images.

    Options (train.unet): `global_context` adds the global-feature branch at the
    bottleneck; `loss` is l1 (less pull toward the desaturated mean) or mse (what PSNR
    measures). `bins_weight` > 0 adds a 1x1 head classifying each pixel's ab bin from the
    last features, trained with Zhang et al.'s rebalanced cross-entropy at half
    resolution, weighted `bins_weight` against the regression loss (a hybrid loss: the
    classes teach the features colour modes a mean would blur). `decode` says which head
    predicts: regression (ab), or bins (their annealed mean at `temperature`, vivid like
    zhang's). The bins head needs the priors stage's bins and weights.
    """

    def __init__(self, width: int = 16, depth: int = 3, global_context: bool = False, loss: str = "l1",
                 priors: dict[str, torch.Tensor] | None = None, bins_weight: float = 0.0,
                 decode: str = "regression", temperature: float = 0.38):
        super().__init__()
        if loss not in UNET_LOSSES or decode not in UNET_DECODES:
            raise ValueError(f"unet: loss must be one of {UNET_LOSSES} and decode one of {UNET_DECODES}, "
                             f"got {loss!r}, {decode!r}")
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([conv_block(1, widths[0])])
        self.down.extend(conv_block(widths[i], widths[i + 1]) for i in range(depth))
        self.context = GlobalContext(widths[-1]) if global_context else None
        self.up = nn.ModuleList(conv_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 2, 1)
        self.loss_name, self.bins_weight, self.decode = loss, bins_weight, decode
        self.classify = None
        if bins_weight > 0 or decode == "bins":
            if priors is None:
                raise ValueError("unet: the bins head needs the priors' bins and weights")
            self.classify = nn.Conv2d(widths[0], len(priors["bins"]), 1)
            self.register_buffer("bins", priors["bins"].detach().clone().float())  # (Q, 2) ab centres
            self.register_buffer("class_weights", priors["weights"].detach().clone().float())  # (Q,)
        if decode == "bins":
            self.temperature = temperature  # only then: evaluate sweeps a model's temperature if it has one

    def features(self, L: torch.Tensor) -> torch.Tensor:
        """The last decoder level's features, (n, width, H, W)."""
        skips = []
        x = L
        for i, block in enumerate(self.down):
            if i:
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
        if self.context is not None:
            x = self.context(x)
        for block in self.up:
            skip = skips.pop()
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(L))

    def loss(self, L: torch.Tensor, ab: torch.Tensor, per_image: bool = False) -> torch.Tensor:
        feats = self.features(L)
        pred = self.head(feats)
        err = F.l1_loss(pred, ab, reduction="none") if self.loss_name == "l1" else F.mse_loss(pred, ab, reduction="none")
        total = reduce_loss(err, per_image)
        if self.bins_weight > 0:
            logits = self.classify(F.avg_pool2d(feats, 2))  # half resolution: a quarter of the soft-encoding
            total = total + self.bins_weight * reduce_loss(bins_cross_entropy(logits, ab, self.bins, self.class_weights),
                                                           per_image)
        return total

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        feats = self.features(L)
        if self.decode == "bins":
            return decode_annealed(self.classify(feats), self.bins, self.temperature, dim=1) / AB_NORM
        return self.head(feats)
