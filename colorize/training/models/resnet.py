"""The ResNet-18 trunk colorizer (Luke Melas-Kyriazi's)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorize.training.models.base import Regression, conv_bn_relu, reduce_loss


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al. 2016): two 3x3 convs plus a shortcut, a 1x1 conv
    where the shape changes. Attribute names are torchvision's (conv1, bn1, conv2, bn2,
    downsample.0/.1), so ImageNet weights load by name."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNetTrunk(nn.Module):
    """The first `stages` stages of ResNet-18, named as torchvision's resnet18 (conv1,
    bn1, layer1, layer2), so its ImageNet state dict maps onto this one key for key.

    conv1 (7x7, stride 2) and a max pool take the input to 1/4; layer1 keeps 1/4 at
    `width` channels, layer2 halves to 1/8 at 2 * width. Full ResNet-18 is width 64.
    `in_channels` is 1 (L) for the colorizer; 3 gives the layout of torchvision's RGB file.
    """

    def __init__(self, width: int = 64, stages: int = 2, in_channels: int = 1):
        super().__init__()
        if stages not in (1, 2):
            raise ValueError(f"ResNetTrunk: stages must be 1 or 2, got {stages}")
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        if stages == 2:
            self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2), BasicBlock(2 * width, 2 * width))
        self.stages = stages
        for m in self.modules():  # torchvision's init, for training from scratch
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return self.layer2(x) if self.stages == 2 else x


class ResNetColor(Regression):
    """Luke Melas-Kyriazi's colorizer ("Image Colorization with Convolutional Neural
    Networks", 2018): a ResNet-18 trunk (optionally ImageNet-pretrained) cut after its
    second stage, where features are already semantic but still at 1/8 resolution, then
    a head of 3x3 conv + batch norm + ReLU blocks with x2 nearest upsampling to ab.

    `depth` is the number of ResNet stages used: 1 (layer1: `width` channels at 1/4) or
    2 (layer2: 2 * width at 1/8, as the original); larger values are clamped to 2 (the
    trunk stops at layer2 in the original, and the default train.depth 3 must build), and
    depth < 1 is a ValueError. Full size: width 64, depth >= 2 (head 128-128-64-64-32-2).

    Loss: MSE, as the original (not the L1 of the other regression nets).
    """

    def __init__(self, width: int = 16, depth: int = 3):
        super().__init__()
        if depth < 1:
            raise ValueError(f"resnet: depth is the number of ResNet stages used (1 or 2; more is clamped to 2), got {depth}")
        if width < 2:
            raise ValueError(f"resnet: width must be >= 2 (the head's last block has width // 2 channels), got {width}")
        self.width, self.stages = width, min(depth, 2)
        self.trunk = ResNetTrunk(width, self.stages)
        w = width
        up = lambda: nn.Upsample(scale_factor=2, mode="nearest")  # noqa: E731 - Melas' nn.Upsample(2)
        head: list[nn.Module] = []
        if self.stages == 2:  # 1/8 -> 1/4; with one stage the trunk already ends at 1/4
            head += [conv_bn_relu(2 * w, 2 * w), up()]
        head += [conv_bn_relu(2 * w if self.stages == 2 else w, w), conv_bn_relu(w, w), up(),
                 conv_bn_relu(w, w // 2), nn.Conv2d(w // 2, 2, 3, padding=1)]
        self.head = nn.Sequential(*head)  # ends at 1/2; forward() does the last x2

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        ab = self.head(self.trunk(L))
        # The original's last x2 upsampling, made exact for sizes not divisible by 8.
        return F.interpolate(ab, size=L.shape[-2:], mode="nearest")

    def loss(self, L: torch.Tensor, ab: torch.Tensor, per_image: bool = False) -> torch.Tensor:
        return reduce_loss(F.mse_loss(self(L), ab, reduction="none"), per_image)

    def load_imagenet(self, state: dict[str, torch.Tensor]) -> None:
        """Load torchvision's ImageNet resnet18 state dict into the trunk (conv1's RGB
        filters summed to one L channel, see `colorize.training.pretrained.imagenet_to_trunk`).
        Strict: every trunk weight and running statistic must come from the file
        (num_batches_tracked excepted: torchvision's file has none)."""
        from colorize.common.errors import UserError
        from colorize.training.pretrained import imagenet_to_trunk

        trunk_state = imagenet_to_trunk(state, self.width, self.stages)
        try:
            missing, unexpected = self.trunk.load_state_dict(trunk_state, strict=False)
        except RuntimeError as e:  # a shape mismatch: not ResNet-18's weights
            raise UserError(f"resnet: the ImageNet weights do not fit a ResNet-18 trunk ({str(e).splitlines()[-1].strip()})") from None
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise UserError(f"resnet: the ImageNet weights are not ResNet-18's: missing {missing[:3]}, unexpected {unexpected[:3]}")


# ------------------------------------------------------------------------ cnn
