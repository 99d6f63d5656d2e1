"""The colorization networks, behind one interface (colorize/training/models/base.py):
`loss`, `predict`, `configure_optimizers`, `training_step`.

| train.model | module | what |
| --- | --- | --- |
| unet | unet.py | U-Net regressing ab, L1 loss |
| zhang | zhang.py | Zhang et al.'s classifier over the ab bins, rebalanced, annealed mean |
| resnet | resnet.py | ResNet-18 trunk + upsampling head, MSE (optional ImageNet trunk) |
| gan | gan.py | U-Net generator + PatchGAN critic, L1 pretraining then WGAN-GP |
| cnn | cnn.py | 12 plain convolutions, no skips |

Every model takes `width` and `depth` (train.width, train.depth); the defaults (16, 3)
train in minutes on 2 CPU cores at 64x64, and each class says which values give the
original's full size. `build_model` makes one from the train params.
"""
from __future__ import annotations

import torch
from torch import nn

from colorize.common.colour import denormalise_ab, normalise_l
from colorize.training.models.base import ColorizationModel
from colorize.training.models.cnn import PlainCNN
from colorize.training.models.gan import UNetGAN
from colorize.training.models.resnet import ResNetColor
from colorize.training.models.unet import UNet
from colorize.training.models.zhang import ZhangNet

MODELS = {"unet": UNet, "zhang": ZhangNet, "resnet": ResNetColor, "gan": UNetGAN, "cnn": PlainCNN}


def build_model(train_params: dict, priors: dict[str, torch.Tensor] | None = None,
                load_weights: bool = True) -> ColorizationModel:
    """The model named by train.model. zhang needs the priors stage's bins and weights
    (`colorize.training.priors.load_priors`, or a checkpoint's buffers). resnet with
    train.resnet.pretrained gets the ImageNet trunk (downloaded once into the download
    cache), unless `load_weights` is false: a caller about to load a checkpoint needs
    no download."""
    name, width, depth = train_params["model"], train_params["width"], train_params["depth"]
    if name == "resnet":
        model = ResNetColor(width=width, depth=depth)
        r = train_params.get("resnet", {})
        if r.get("pretrained", False) and load_weights:
            from colorize.training.pretrained import (
                RESNET18_URL,
                load_imagenet_resnet18,
            )

            model.load_imagenet(load_imagenet_resnet18(r.get("weights_url", RESNET18_URL)))
        return model
    if name == "zhang":
        if priors is None:
            from colorize.common import paths
            from colorize.training.priors import load_priors

            priors = load_priors(paths.PRIORS)
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
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(L), batch_size):
        x = normalise_l(L[start : start + batch_size])[:, None]
        out.append(denormalise_ab(model.predict(x)).permute(0, 2, 3, 1))
    model.train(was_training)
    return torch.cat(out)
