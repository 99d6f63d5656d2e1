"""The WGAN-GP seed: a U-Net generator and a PatchGAN critic, and how they train."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorize.training.models.base import Regression, clip, conv_block


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
    generator's L1, used for the L1 pretraining and for validation. Training: L1 only for
    train.gan.pretrain_epochs, then per batch one critic step (`critic_loss`, AdamW with
    the WGAN-GP paper's betas (0, 0.9)) and two generator steps (lambda_L1 * L1 +
    `generator_adversarial_loss`). `depth` is the generator's number of levels (full
    size 4; the default 3 fits 32x32 inputs with a 4x4 bottleneck); the critic is fixed
    (see `PatchCritic`). Full size: width 64, depth 4.

    Its gradient penalty differentiates through the critic twice, which DDP does not
    support: across ranks it averages its gradients itself (ctx.reduce_gradients).
    """

    manual_gradient_sync = True
    epoch_metrics = ("critic_wasserstein", "gradient_penalty")

    def __init__(self, width: int = 16, depth: int = 3):
        super().__init__()
        if depth < 1:
            raise ValueError(f"gan: depth is the generator's number of U-Net levels, >= 1, got {depth}")
        self.generator = UNetGenerator(width, depth)
        self.critic = PatchCritic(width)
        self.apply(gan_init)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.generator(L)

    def configure_optimizers(self, cfg: dict) -> dict[str, torch.optim.Optimizer]:
        return {
            "model": torch.optim.AdamW(self.generator.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"]),
            "critic": torch.optim.AdamW(self.critic.parameters(), lr=cfg["gan"]["critic_lr"], betas=(0.0, 0.9),
                                        weight_decay=0.0),
        }

    def training_step(self, x, y, optimizers, ctx, params=None):
        if ctx.epoch <= ctx.cfg["gan"]["pretrain_epochs"]:  # L1 pretraining of the generator
            return super().training_step(x, y, optimizers, ctx, self.generator.parameters())
        return self._wgan_gp_step(x, y, optimizers, ctx)

    def _wgan_gp_step(self, x, y, optimizers, ctx) -> tuple[torch.Tensor, dict[str, float]]:
        """One critic update, then two generator updates."""
        g = ctx.cfg["gan"]
        with torch.no_grad(), ctx.autocast:
            fake = self.generator(x)
        real_pair, fake_pair = torch.cat([x, y], 1), torch.cat([x, fake.float()], 1)
        c_loss, wasserstein, gp = critic_loss(self.critic, real_pair, fake_pair, g["lambda_gp"])
        _step(optimizers["critic"], c_loss, self.critic.parameters(), ctx)
        for _ in range(2):
            with ctx.autocast:
                pred = self.generator(x)
                l1 = (pred.float() - y).abs().mean((1, 2, 3))
                adv = generator_adversarial_loss(self.critic, torch.cat([x, pred.float()], 1))
            _step(optimizers["model"], g["lambda_l1"] * l1.mean() + adv, self.generator.parameters(), ctx)
        self.critic.zero_grad(set_to_none=True)  # the generator steps left gradients there
        return l1.detach(), {"critic_wasserstein": float(wasserstein), "gradient_penalty": float(gp)}


def _step(optimizer, loss: torch.Tensor, params, ctx) -> None:
    params = list(params)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ctx.reduce_gradients(params)
    clip(params, ctx.cfg["grad_clip"])
    optimizer.step()


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
