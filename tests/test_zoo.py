"""The model zoo beyond unet/zhang: resnet (Melas), cnn (the plain CNN seed) and gan
(the WGAN-GP seed). Shapes at 32x32 and 64x64, parameter counts against the originals,
losses and gradients, the GAN's critic, penalty and init, and the ImageNet weights for
resnet, downloaded from a loopback mirror through the project's download cache.

Small inputs (batch 2, 32x32 / 64x64) and full width only where it is asserted: the
whole file runs in seconds on 2 CPU cores.
"""
from __future__ import annotations

import hashlib
import io

import pytest
import torch
from torch import nn

from colorize.common import fetch
from colorize.common.errors import UserError
from colorize.training.models import MODELS, PlainCNN, ResNetColor, UNetGAN, build_model, count_parameters
from colorize.training.models.gan import critic_loss, generator_adversarial_loss, gradient_penalty
from colorize.training.models.resnet import ResNetTrunk
from colorize.training.pretrained import imagenet_to_trunk, load_imagenet_resnet18
from tests.mirror import Mirror

NEW = ("resnet", "cnn", "gan")
FULL = {"resnet": (64, 2), "cnn": (64, 3), "gan": (64, 4)}  # (width, depth) of the originals


@pytest.fixture(autouse=True)
def small_and_seeded():
    torch.manual_seed(0)


def train_params(model: str, width: int = 16, depth: int = 3, **extra) -> dict:
    return {"model": model, "width": width, "depth": depth, **extra}


def batch(size: int, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(n, 1, size, size) - 0.5, (torch.rand(n, 2, size, size) - 0.5) * 0.6


# ------------------------------------------------------------------------ every new model

def test_the_registry_holds_the_new_models():
    assert {"resnet": ResNetColor, "cnn": PlainCNN, "gan": UNetGAN}.items() <= MODELS.items()


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", NEW)
def test_default_size_predicts_ab_at_the_input_resolution_and_trains(name, size):
    model = build_model(train_params(name))
    L, ab = batch(size)
    assert model.predict(L).shape == (2, 2, size, size)
    loss = model.loss(L, ab)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    trained = model.generator if name == "gan" else model  # L1 reaches the generator only
    for pname, p in trained.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert sum(p.grad.abs().sum() for p in trained.parameters()) > 0


@pytest.mark.parametrize("name", NEW)
def test_per_image_loss_averages_to_the_batch_loss(name):
    model = build_model(train_params(name)).eval()
    L, ab = batch(32, n=3)
    per_image = model.loss(L, ab, per_image=True)
    assert per_image.shape == (3,)
    assert per_image.mean().item() == pytest.approx(model.loss(L, ab).item(), rel=1e-5)


@pytest.mark.parametrize("name", NEW)
def test_full_size_predicts_at_the_input_resolution(name):
    width, depth = FULL[name]
    model = build_model(train_params(name, width, depth)).eval()
    with torch.no_grad():
        assert model.predict(batch(32, n=1)[0]).shape == (1, 2, 32, 32)


def test_odd_sizes_still_come_back_at_the_input_resolution():
    L = torch.rand(1, 1, 36, 44)  # not divisible by 8 or 16
    for name in NEW:
        with torch.no_grad():
            assert build_model(train_params(name)).eval()(L).shape == (1, 2, 36, 44), name


@pytest.mark.parametrize("name", NEW)
def test_depth_below_one_is_a_clear_error(name):
    with pytest.raises(ValueError, match="depth"):
        build_model(train_params(name, depth=0))


# ------------------------------------------------------------------------ resnet

def torchvision_resnet18_keys(stages: int = 2) -> set[str]:
    """The state-dict keys of torchvision's resnet18 up to layer{stages}, spelled out."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", *(f"bn1.{k}" for k in bn)}
    for layer in range(1, stages + 1):
        for block in (0, 1):
            pre = f"layer{layer}.{block}"
            keys |= {f"{pre}.conv1.weight", f"{pre}.conv2.weight"}
            keys |= {f"{pre}.bn{i}.{k}" for i in (1, 2) for k in bn}
            if layer > 1 and block == 0:
                keys |= {f"{pre}.downsample.0.weight", *(f"{pre}.downsample.1.{k}" for k in bn)}
    return keys


def test_resnet_trunk_has_torchvisions_names_and_resnet18s_parameter_count():
    model = ResNetColor(width=64, depth=2)
    assert set(model.trunk.state_dict()) == torchvision_resnet18_keys(2)
    # ResNet-18's conv1 (1 input channel) + bn1 + layer1 + layer2, from the architecture:
    conv3 = lambda c_in, c_out: 9 * c_in * c_out  # noqa: E731 - 3x3, no bias
    bn = lambda c: 2 * c  # noqa: E731 - scale and shift
    block = lambda c_in, c_out: conv3(c_in, c_out) + bn(c_out) + conv3(c_out, c_out) + bn(c_out)  # noqa: E731
    conv1 = 64 * 1 * 7 * 7 + bn(64)
    layer1 = 2 * block(64, 64)
    layer2 = block(64, 128) + (64 * 128 + bn(128)) + block(128, 128)  # the first block's 1x1 shortcut
    assert (conv1, layer1, layer2) == (3136 + 128, 147_968, 525_568)
    assert count_parameters(model.trunk) == conv1 + layer1 + layer2 == 676_800


def test_resnet_full_size_is_melas_trunk_and_head():
    model = ResNetColor(width=64, depth=2)
    convs = [m for m in model.head.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(128, 128), (128, 64), (64, 64), (64, 32), (32, 2)]
    assert sum(isinstance(m, nn.Upsample) for m in model.head.modules()) == 2  # + the last one in forward()
    with torch.no_grad():
        assert model.trunk(torch.zeros(1, 1, 64, 64)).shape == (1, 128, 8, 8)  # 128 channels at 1/8


def test_resnet_depth_is_the_number_of_stages_clamped_to_two():
    one = ResNetColor(width=16, depth=1)
    assert not hasattr(one.trunk, "layer2")
    with torch.no_grad():
        assert one.trunk(torch.zeros(1, 1, 32, 32)).shape == (1, 16, 8, 8)  # layer1: width at 1/4
        assert one(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    assert ResNetColor(width=16, depth=3).stages == ResNetColor(width=16, depth=9).stages == 2


def test_resnet_loss_is_mse():
    model = ResNetColor().eval()
    L, ab = batch(32)
    assert model.loss(L, ab).item() == pytest.approx(((model(L) - ab) ** 2).mean().item(), rel=1e-6)


def imagenet_file(folder, name_hash: str | None = None) -> tuple[str, dict]:
    """A stand-in for torchvision's resnet18-f37072fd.pth: its key names and shapes (RGB
    conv1, no num_batches_tracked, plus fc and layer3 that the trunk must drop), random
    values, saved under resnet18-<first 8 hex of its sha256>.pth (or `name_hash`)."""
    trunk = ResNetTrunk(width=64, stages=2, in_channels=3)
    state = {k: torch.randn_like(v.float()) for k, v in trunk.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["layer3.0.conv1.weight"] = torch.randn(256, 128, 3, 3)
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    name = f"resnet18-{name_hash or hashlib.sha256(data).hexdigest()[:8]}.pth"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return name, state


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_imagenet_weights_download_once_verify_and_load_into_the_trunk(tmp_path, cache):
    name, state = imagenet_file(tmp_path / "www")
    with Mirror(tmp_path / "www") as mirror:
        url = f"{mirror.url}/{name}"
        params = train_params("resnet", 64, 2, resnet={"pretrained": True, "weights_url": url})
        model = build_model(params)
        assert mirror.total_requests() == 1
        again = build_model(params)  # warm cache: not one request
        assert mirror.total_requests() == 1
        assert load_imagenet_resnet18(url).keys() == state.keys()
        assert mirror.total_requests() == 1
    trunk = model.trunk.state_dict()
    assert trunk["conv1.weight"].shape == (64, 1, 7, 7)
    assert torch.allclose(trunk["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    for k, v in trunk.items():
        if k != "conv1.weight" and not k.endswith("num_batches_tracked"):
            assert torch.equal(v, state[k]), k
    assert torch.equal(again.trunk.state_dict()["layer2.1.bn2.running_var"], state["layer2.1.bn2.running_var"])
    with torch.no_grad():
        assert model.eval()(batch(32, n=1)[0]).shape == (1, 2, 32, 32)


def test_a_wrong_hash_prefix_is_a_one_line_error_and_nothing_is_kept(tmp_path, cache):
    name, _ = imagenet_file(tmp_path / "www", name_hash="00000000")
    with Mirror(tmp_path / "www") as mirror:
        url = f"{mirror.url}/{name}"
        with pytest.raises(UserError, match="checksum mismatch") as e:
            load_imagenet_resnet18(url)
    assert "\n" not in str(e.value) and url in str(e.value)
    assert not fetch.cached_path(url).exists()  # a rerun fetches it again


def test_pretrained_weights_need_full_width_and_a_hashed_name(tmp_path, cache):
    _, state = imagenet_file(tmp_path / "www")
    with pytest.raises(UserError, match="train.width: 64"):
        imagenet_to_trunk(state, width=16)
    with pytest.raises(UserError, match="SHA-256 prefix"):
        load_imagenet_resnet18("http://127.0.0.1:9/resnet18.pth")  # refused before any request
    stage_one = imagenet_to_trunk(state, width=64, stages=1)
    assert not any(k.startswith(("layer2.", "layer3.", "fc.")) for k in stage_one)


def test_build_model_can_skip_the_download_when_a_checkpoint_follows():
    params = train_params("resnet", 64, 2, resnet={"pretrained": True, "weights_url": "http://127.0.0.1:9/resnet18-00000000.pth"})
    assert isinstance(build_model(params, load_weights=False), ResNetColor)


# ------------------------------------------------------------------------ cnn

def test_cnn_full_size_is_the_seeds_12_convs_and_3_9m_parameters():
    model = PlainCNN(width=64, depth=3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 256, 128, 64, 32, 2]
    assert [c.stride[0] for c in convs].count(2) == 3
    assert 3_500_000 <= count_parameters(model) <= 4_300_000
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())  # plain: x2 upsampling


def test_cnn_depth_is_the_number_of_downsamplings():
    for depth in (1, 2, 4):
        model = PlainCNN(width=16, depth=depth)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 3 * depth + 3 and [c.stride[0] for c in convs].count(2) == depth
        with torch.no_grad():
            assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)


# ------------------------------------------------------------------------ gan

def test_gan_generator_is_a_4_plus_4_unet_at_full_size():
    model = UNetGAN(width=64, depth=4)
    g = model.generator
    assert len(g.down) == 4 and len(g.up) == 4
    assert [b.up.out_channels for b in g.up] == [512, 256, 128, 64]
    assert g.bottleneck[3].out_channels == 1024  # Ronneberger's 64..1024
    assert 30_000_000 < count_parameters(g) < 32_000_000
    # pix2pix's PatchGAN at 64: 4x4 convs 3-64-128-256-512-1
    assert count_parameters(model.critic) == (3 * 64 * 16 + 64) + 64 * 128 * 16 + 128 * 256 * 16 + 256 * 512 * 16 + (512 * 16 + 1)


@pytest.mark.parametrize("size, patches", [(32, 2), (64, 6)])
def test_critic_scores_patches_without_a_sigmoid(size, patches):
    critic = UNetGAN().critic
    pairs = torch.cat(batch(size), 1)
    assert critic(pairs).shape == (2, 1, patches, patches)
    convs = [m for m in critic.net if isinstance(m, nn.Conv2d)]
    norms = [m for m in critic.net if isinstance(m, nn.InstanceNorm2d)]
    assert len(convs) == 5 and all(c.kernel_size == (4, 4) for c in convs) and len(norms) == 3
    assert isinstance(critic.net[-1], nn.Conv2d) and convs[-1].out_channels == 1  # no sigmoid after it
    with torch.no_grad():
        critic.net[-1].bias.fill_(5.0)
        assert (critic(pairs) > 1).all()  # unbounded scores


def test_gan_init_is_normal_0_02():
    model = UNetGAN()
    for part in (model.generator, model.critic):
        weights = torch.cat([m.weight.flatten() for m in part.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
        assert weights.mean().abs() < 0.002 and weights.std().item() == pytest.approx(0.02, rel=0.05)
        assert all((m.bias == 0).all() for m in part.modules() if isinstance(m, nn.Conv2d) and m.bias is not None)
    bn = [m for m in model.generator.modules() if isinstance(m, nn.BatchNorm2d)]
    scales = torch.cat([m.weight for m in bn]).detach()
    assert scales.mean().item() == pytest.approx(1.0, abs=0.005) and scales.std().item() == pytest.approx(0.02, rel=0.2)
    assert all((m.bias == 0).all() for m in bn)


class LinearCritic(nn.Module):
    """D(x) = <v, x> with ||v|| = scale: gradient norm `scale` everywhere."""

    def __init__(self, shape, scale: float = 1.0):
        super().__init__()
        v = torch.randn(shape)
        self.v = nn.Parameter(v / v.norm() * scale)

    def forward(self, x):
        return (x * self.v).sum((1, 2, 3)).view(-1, 1, 1, 1)


def test_gradient_penalty_is_zero_for_a_1_lipschitz_linear_critic():
    real, fake = torch.cat(batch(32), 1), torch.cat(batch(32), 1)
    assert gradient_penalty(LinearCritic((3, 32, 32)), real, fake).item() == pytest.approx(0.0, abs=1e-10)
    assert gradient_penalty(LinearCritic((3, 32, 32), scale=3.0), real, fake).item() == pytest.approx(4.0, rel=1e-5)


def test_gradient_penalty_trains_the_critic():
    critic = UNetGAN().critic
    real, fake = torch.cat(batch(32), 1), torch.cat(batch(32), 1)
    gp = gradient_penalty(critic, real, fake)
    assert gp.ndim == 0 and gp.item() >= 0
    gp.backward()
    # every weight shapes the gradient (the last bias does not: d/dx ignores it)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in critic.named_parameters() if n.endswith("weight"))


def test_critic_and_generator_losses_train_only_their_own_side():
    model = UNetGAN()
    L, ab = batch(32)
    real = torch.cat([L, ab], 1)
    fake = torch.cat([L, model.generator(L)], 1)
    loss, wasserstein, gp = critic_loss(model.critic, real, fake, lambda_gp=10.0)
    assert loss.item() == pytest.approx(-wasserstein.item() + 10.0 * gp.item(), rel=1e-4, abs=1e-6)
    assert not wasserstein.requires_grad and not gp.requires_grad
    loss.backward()
    assert all(p.grad is not None for p in model.critic.parameters())
    assert all(p.grad is None for p in model.generator.parameters())  # fake was detached
    model.critic.zero_grad(set_to_none=True)
    adv = generator_adversarial_loss(model.critic, fake)
    assert adv.item() == pytest.approx(-model.critic(fake).mean().item(), rel=1e-5)
    adv.backward()
    assert all(p.grad is not None for p in model.generator.parameters())
