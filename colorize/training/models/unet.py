"""The U-Net: the foundation model."""
from __future__ import annotations

import torch
from torch import nn

from colorize.training.models.base import Regression, conv_block


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
