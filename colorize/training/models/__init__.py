"""The colorization networks, behind one interface (colorize/training/models/base.py):
`loss`, `predict`, `configure_optimizers`, `training_step`.

| train.model | module | what |
| --- | --- | --- |
| unet | unet.py | U-Net regressing ab, L1 (or MSE) loss, optional global-feature branch |
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
    """The model named by train.model. zhang (and unet's bins head) needs the priors stage's bins and weights
    (`colorize.training.priors.load_priors`, or a checkpoint's buffers). resnet with
    train.resnet.pretrained gets the ImageNet trunk (downloaded once into the download
    cache), unless `load_weights` is false: a caller about to load a checkpoint needs
    no download."""
    model = _build(train_params, priors, load_weights)
    model.flip_average = train_params.get("flip_average", False)  # read by predict_ab
    return model


def _build(train_params: dict, priors: dict[str, torch.Tensor] | None, load_weights: bool) -> ColorizationModel:
    name, width, depth = train_params["model"], train_params["width"], train_params["depth"]
    if priors is None and needs_priors(train_params):
        priors = _priors_stage()
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
        z = train_params["zhang"]
        return ZhangNet(priors["bins"], priors["weights"], width=width, depth=depth,
                        temperature=z["temperature"], rebalance=z["rebalance"])
    if name == "unet":  # train.unet's keys are UNet's options; a dict without them is the plain U-Net
        return UNet(width=width, depth=depth, priors=priors, **train_params.get("unet", {}))
    return MODELS[name](width=width, depth=depth)


def needs_priors(train_params: dict) -> bool:
    """zhang, and a unet with its bins head, are built around the priors stage's bins."""
    u = train_params.get("unet", {})
    return train_params["model"] == "zhang" or (
        train_params["model"] == "unet" and (u.get("bins_weight", 0) > 0 or u.get("decode") == "bins"))


def _priors_stage() -> dict[str, torch.Tensor]:
    from colorize.common import paths
    from colorize.training.priors import load_priors

    return load_priors(paths.PRIORS)


def checkpoint_priors(state: dict) -> dict[str, torch.Tensor] | None:
    """The bins and weights a checkpoint carries (zhang, unet with its bins head; None for others)."""
    if "bins" in state and "class_weights" in state:
        return {"bins": state["bins"], "weights": state["class_weights"]}
    return None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def predict_ab(model: nn.Module, L: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """ab (n, H, W, 2) in Lab units for L (n, H, W) in [0, 100]. A model built with
    train.flip_average predicts each image and its mirror image, and averages the two in
    ab (test-time flip): every caller (validation, evaluate, colorize, serving) gets it."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(L), batch_size):
        x = normalise_l(L[start : start + batch_size])[:, None]
        ab = model.predict(x)
        if getattr(model, "flip_average", False):
            ab = (ab + model.predict(x.flip(-1)).flip(-1)) / 2
        out.append(denormalise_ab(ab).permute(0, 2, 3, 1))
    model.train(was_training)
    return torch.cat(out)
