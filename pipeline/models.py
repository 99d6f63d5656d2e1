"""The colorization networks. Every model maps normalised L (n, 1, H, W) to normalised
ab (n, 2, H, W); `build_model` makes one from the train params.
"""
from __future__ import annotations

import torch
from torch import nn


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


class UNet(nn.Module):
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


MODELS = {"unet": UNet}


def build_model(train_params: dict) -> nn.Module:
    cls = MODELS[train_params["model"]]
    return cls(width=train_params["width"], depth=train_params["depth"])


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
        out.append(denormalise_ab(model(x)).permute(0, 2, 3, 1))
    model.train(was_training)
    return torch.cat(out)
