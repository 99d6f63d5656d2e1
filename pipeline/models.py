"""The colorization networks, behind one interface the training loop relies on:

    model.loss(L, ab) -> scalar    training loss for a batch: normalised L (n, 1, H, W)
                                   and normalised ab (n, 2, H, W) (colour.py);
                                   per_image=True gives each image's loss, (n,), for the
                                   training loop's loss table
    model.predict(L) -> ab         normalised ab (n, 2, H, W) at the input's resolution

Regression models (`Regression`) predict ab directly with an L1 loss (resnet: MSE, as
its original); `zhang` predicts a distribution over the quantised ab bins and decodes it;
`gan` is a U-Net generator (the regression net) plus a PatchGAN critic that train.py
trains with WGAN-GP. `build_model` makes one from the train params.

Every model takes `width` and `depth` (train.width, train.depth); the defaults (16, 3)
train in minutes on 2 CPU cores at 64x64, and each class says which values give the
original's full size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.colour import AB_NORM, decode_annealed, soft_encode


def reduce_loss(err: torch.Tensor, per_image: bool) -> torch.Tensor:
    """The mean of a per-element loss: per image (n,) for the loss table, else one scalar."""
    return err.flatten(1).mean(1) if per_image else err.mean()


class Regression(nn.Module):
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

    def loss(self, L: torch.Tensor, ab: torch.Tensor, per_image: bool = False) -> torch.Tensor:
        logits = self(L)
        small = F.interpolate(ab * AB_NORM, size=logits.shape[-2:], mode="area")
        target = soft_encode(small, self.bins, dim=1)
        ce = -(target * F.log_softmax(logits, dim=1)).sum(1)  # (n, h, w)
        if self.rebalance:
            ce = ce * self.class_weights[target.argmax(1)]
        return reduce_loss(ce, per_image)

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        ab = decode_annealed(self(L), self.bins, self.temperature, dim=1) / AB_NORM
        return F.interpolate(ab, size=L.shape[-2:], mode="bilinear", align_corners=False)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv, batch norm, ReLU: one layer of the resnet head and the plain CNN. No conv
    bias: the batch norm's shift makes it redundant."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


# ------------------------------------------------------------------------ resnet

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
        filters summed to one L channel, see `pipeline.pretrained.imagenet_to_trunk`).
        Strict: every trunk weight and running statistic must come from the file
        (num_batches_tracked excepted: torchvision's file has none)."""
        from pipeline.errors import UserError
        from pipeline.pretrained import imagenet_to_trunk

        trunk_state = imagenet_to_trunk(state, self.width, self.stages)
        try:
            missing, unexpected = self.trunk.load_state_dict(trunk_state, strict=False)
        except RuntimeError as e:  # a shape mismatch: not ResNet-18's weights
            raise UserError(f"resnet: the ImageNet weights do not fit a ResNet-18 trunk ({str(e).splitlines()[-1].strip()})") from None
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise UserError(f"resnet: the ImageNet weights are not ResNet-18's: missing {missing[:3]}, unexpected {unexpected[:3]}")


# ------------------------------------------------------------------------ cnn

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

class UpBlock(nn.Module):
    """A U-Net decoder block: x2 transposed conv, concatenate the encoder's skip, then
    2 x (conv, BN, ReLU)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv = conv_block(2 * c_out, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:  # odd sizes: max pooling floored, pad back to the skip's size
            x = F.pad(x, (0, dw, 0, dh))
        return self.conv(torch.cat([x, skip], dim=1))


class UNetGenerator(nn.Module):
    """The WGAN-GP seed's U-Net generator. `depth` levels (full size 4): encoder block i
    (2 x (conv, BN, ReLU), width * 2**i channels) is followed by a 2x2 max pool; a
    bottleneck block at 1/2**depth (width * 2**depth channels) sits below the last pool;
    then `depth` decoder blocks (`UpBlock`) mirror the encoder, each taking the skip of
    its level; a 1x1 conv gives ab. So 4 + 4 blocks at full size, plus the bottleneck
    that the 4th pool feeds (Ronneberger et al.'s layout: 64..1024 channels at width 64).
    """

    def __init__(self, width: int = 16, depth: int = 4):
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(conv_block(1 if i == 0 else widths[i - 1], widths[i]) for i in range(depth))
        self.bottleneck = conv_block(widths[depth - 1], widths[depth])
        self.up = nn.ModuleList(UpBlock(widths[i + 1], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 2, 1)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        skips = []
        x = L
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for block in self.up:
            x = block(x, skips.pop())
        return self.head(x)


class PatchCritic(nn.Module):
    """The WGAN-GP critic: a PatchGAN (pix2pix's 70x70 layout, Isola et al. 2017) over
    concat(L, ab), 3 channels. 5 blocks of 4x4 conv: width, 2w, 4w (stride 2), 8w
    (stride 1), each with instance norm (not batch norm: the gradient penalty is per
    sample) and leaky ReLU 0.2, except that the first has no norm; the last conv gives a
    1-channel map of patch scores, with no sigmoid (a critic, not a classifier).

    It does not depend on `depth`; inputs must be at least 24 pixels (a 32x32 input
    gives a 2x2 map, 64x64 a 6x6 one).
    """

    def __init__(self, width: int = 16):
        super().__init__()
        w = width

        def block(c_in: int, c_out: int, stride: int, norm: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, stride=stride, padding=1, bias=not norm)]
            if norm:
                layers.append(nn.InstanceNorm2d(c_out))
            return layers + [nn.LeakyReLU(0.2, inplace=True)]

        self.net = nn.Sequential(
            *block(3, w, 2, norm=False), *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2), *block(4 * w, 8 * w, 1),
            nn.Conv2d(8 * w, 1, 4, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch scores (n, 1, h, w) for x = concat(L, ab) (n, 3, H, W)."""
        return self.net(x)


def gan_init(m: nn.Module) -> None:
    """DCGAN's init, as the seed: conv weights N(0, 0.02), batch norm scales N(1, 0.02),
    biases 0. Use with `module.apply`."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class UNetGAN(Regression):
    """The WGAN-GP seed: a U-Net `generator` (L -> normalised ab) and a PatchGAN `critic`.

    As a Regression net it is the generator: forward/predict give ab, and `loss` is the
    generator's L1, used for the L1 pretraining and for validation. train.py then
    alternates `critic_loss` and lambda_L1 * L1 + `generator_adversarial_loss` steps.
    `depth` is the generator's number of levels (full size 4; the default 3 fits 32x32
    inputs with a 4x4 bottleneck); the critic is fixed (see `PatchCritic`). Full size:
    width 64, depth 4.
    """

    def __init__(self, width: int = 16, depth: int = 3):
        super().__init__()
        if depth < 1:
            raise ValueError(f"gan: depth is the generator's number of U-Net levels, >= 1, got {depth}")
        self.generator = UNetGenerator(width, depth)
        self.critic = PatchCritic(width)
        self.apply(gan_init)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.generator(L)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's penalty (Gulrajani et al. 2017): E[(||grad_x D(x)||_2 - 1)^2] at points
    x mixed between real and fake pairs with one uniform weight per sample.

    D(x) is the mean of the critic's patch map, the per-sample score whose expectation
    difference `critic_loss` estimates; create_graph so the penalty trains the critic.
    """
    real, fake = real.detach(), fake.detach()
    eps = torch.rand(len(real), 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    score = critic(mixed).flatten(1).mean(1)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                lambda_gp: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The critic's WGAN-GP loss on concat(L, ab) pairs: -(E[D(real)] - E[D(fake)]) +
    lambda_gp * gradient penalty. Returns (loss, Wasserstein estimate, penalty), the last
    two detached, for logging. `fake` is detached: this step trains only the critic."""
    fake = fake.detach()
    wasserstein = critic(real).mean() - critic(fake).mean()
    gp = gradient_penalty(critic, real, fake)
    return -wasserstein + lambda_gp * gp, wasserstein.detach(), gp.detach()


def generator_adversarial_loss(critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """The generator's WGAN loss: -E[D(fake)], fake = concat(L, generated ab)."""
    return -critic(fake).mean()


MODELS = {"unet": UNet, "zhang": ZhangNet, "resnet": ResNetColor, "gan": UNetGAN, "cnn": PlainCNN}


def build_model(train_params: dict, priors: dict[str, torch.Tensor] | None = None,
                load_weights: bool = True) -> nn.Module:
    """The model named by train.model. zhang needs the priors stage's bins and weights
    (`pipeline.priors.load_priors()`, or a checkpoint's buffers). resnet with
    train.resnet.pretrained gets the ImageNet trunk (downloaded once into the download
    cache), unless `load_weights` is false: a caller about to load a checkpoint needs
    no download."""
    name, width, depth = train_params["model"], train_params["width"], train_params["depth"]
    if name == "resnet":
        model = ResNetColor(width=width, depth=depth)
        r = train_params.get("resnet", {})
        if r.get("pretrained", False) and load_weights:
            from pipeline.pretrained import RESNET18_URL, load_imagenet_resnet18

            model.load_imagenet(load_imagenet_resnet18(r.get("weights_url", RESNET18_URL)))
        return model
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
