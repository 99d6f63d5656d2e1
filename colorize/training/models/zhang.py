"""Zhang et al.'s classification colorizer over the quantised ab bins."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorize.common.colour import AB_NORM, decode_annealed, soft_encode
from colorize.training.models.base import ColorizationModel, reduce_loss


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


def bins_cross_entropy(logits: torch.Tensor, ab: torch.Tensor, bins: torch.Tensor,
                       class_weights: torch.Tensor | None) -> torch.Tensor:
    """Zhang et al.'s loss per pixel, (n, h, w): cross-entropy of the logits (n, Q, h, w)
    against the soft-encoded ab (normalised, (n, 2, H, W)) shrunk to the logits' size
    (5 nearest bins, sigma 5), each pixel weighted by the rebalancing weight of its
    nearest bin when `class_weights` are given."""
    small = F.interpolate(ab * AB_NORM, size=logits.shape[-2:], mode="area")
    target = soft_encode(small, bins, dim=1)
    ce = -(target * F.log_softmax(logits, dim=1)).sum(1)
    if class_weights is not None:
        ce = ce * class_weights[target.argmax(1)]
    return ce


class ZhangNet(ColorizationModel):
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

    def loss(self, L: torch.Tensor, ab: torch.Tensor, per_image: bool = False) -> torch.Tensor:
        ce = bins_cross_entropy(self(L), ab, self.bins, self.class_weights if self.rebalance else None)
        return reduce_loss(ce, per_image)

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        ab = decode_annealed(self(L), self.bins, self.temperature, dim=1) / AB_NORM
        return F.interpolate(ab, size=L.shape[-2:], mode="bilinear", align_corners=False)
