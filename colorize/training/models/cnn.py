"""The plain encoder-decoder CNN of the CNN seed."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorize.training.models.base import Regression, conv_bn_relu


class PlainCNN(Regression):
    """The plain encoder-decoder CNN of the "CNN seed" (Emil Wallner's beta colorizer,
    "Colorizing B&W Photos with Neural Networks", 2018): no skips, no pretrained parts.

    Encoder: `depth` stages of (3x3 conv, 3x3 conv with stride 2) at width * 2**i
    channels; middle: 3 convs (x2, x1, x1/2 of the last stage's channels); decoder:
    depth - 1 times (x2 upsampling, conv halving the channels), a 3x3 conv to ab at 1/2
    resolution and a last x2 upsampling. That is 3 * depth + 3 conv layers; `depth` is
    the number of downsamplings (and upsamplings).

    Full size: width 64, depth 3: 12 convs 64, 64, 128, 128, 256, 256, 512, 256, 128, 64,
    32, 2 and about 3.9 M parameters, as the seed. Unlike the seed, each hidden conv is
    followed by batch norm (it trains at this project's learning rate, like the other
    nets) and the output is linear rather than tanh (as the other regression nets here).
    """

    def __init__(self, width: int = 16, depth: int = 3):
        super().__init__()
        if depth < 1:
            raise ValueError(f"cnn: depth is the number of downsamplings, >= 1, got {depth}")
        if width < 2:
            raise ValueError(f"cnn: width must be >= 2 (the last hidden conv has width // 2 channels), got {width}")
        layers: list[nn.Module] = []
        c = 1
        for i in range(depth):
            layers += [conv_bn_relu(c, width * 2**i), conv_bn_relu(width * 2**i, width * 2**i, stride=2)]
            c = width * 2**i
        layers += [conv_bn_relu(c, 2 * c), conv_bn_relu(2 * c, c), conv_bn_relu(c, c // 2)]
        c //= 2
        for _ in range(depth - 1):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv_bn_relu(c, c // 2)]
            c //= 2
        layers.append(nn.Conv2d(c, 2, 3, padding=1))
        self.net = nn.Sequential(*layers)  # ends at 1/2; forward() does the last x2

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        # The seed's last x2 upsampling, made exact for sizes not divisible by 2**depth.
        return F.interpolate(self.net(L), size=L.shape[-2:], mode="nearest")


# ------------------------------------------------------------------------ gan
