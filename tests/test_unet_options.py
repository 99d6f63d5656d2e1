"""The U-Net's options of the real-photo study (docs/quality.md): the global-feature
branch, the MSE loss, the hybrid bins head, and test-time flips (train.flip_average).
Small inputs on CPU: the file runs in seconds."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from colorize.common.params import ParamsError, load_params, validate
from colorize.training import checkpoint
from colorize.training.models import UNet, build_model, checkpoint_priors, needs_priors, predict_ab
from colorize.training.models.zhang import bins_cross_entropy


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def priors() -> dict[str, torch.Tensor]:
    """A small ab grid as the bins, with uneven weights: the priors stage's shapes."""
    a, b = torch.meshgrid(torch.arange(-40.0, 41, 20), torch.arange(-40.0, 41, 20), indexing="ij")
    bins = torch.stack([a.flatten(), b.flatten()], 1)
    return {"bins": bins, "weights": torch.linspace(0.5, 2.0, len(bins))}


def unet_params(**unet) -> dict:
    train = copy.deepcopy(load_params()["train"])
    train.update(model="unet", width=4, depth=2)
    train["unet"].update(unet)
    return train


def test_global_context_lets_a_far_corner_change_every_pixel():
    """Without the branch a depth-1 U-Net sees ~20 px around a pixel: a change in the far
    corner cannot reach the top-left. With it, the image's mean feature reaches every pixel."""
    L = torch.rand(1, 1, 64, 64) * 2 - 1
    moved = L.clone()
    moved[..., 48:, 48:] = -moved[..., 48:, 48:]
    for context, reaches in ((False, False), (True, True)):
        net = UNet(width=4, depth=1, global_context=context).eval()
        with torch.no_grad():
            corner = (net(L) - net(moved))[..., :8, :8].abs().max().item()
        assert (corner > 0) is reaches, (context, corner)


def test_mse_loss_is_the_mean_squared_error_per_image_and_per_batch():
    net = UNet(width=4, depth=2, loss="mse")
    L, ab = torch.rand(3, 1, 32, 32) * 2 - 1, (torch.rand(3, 2, 32, 32) - 0.5) * 0.6
    want = F.mse_loss(net(L), ab)
    assert torch.allclose(net.loss(L, ab), want)
    assert torch.allclose(net.loss(L, ab, per_image=True).mean(), want)
    with pytest.raises(ValueError, match="loss must be one of"):
        UNet(loss="huber")


def test_bins_head_adds_the_weighted_rebalanced_cross_entropy(priors):
    L, ab = torch.rand(2, 1, 32, 32) * 2 - 1, (torch.rand(2, 2, 32, 32) - 0.5) * 0.6
    net = build_model(unet_params(bins_weight=0.05), priors)
    feats = net.features(L)
    regression = F.l1_loss(net.head(feats), ab)
    ce = bins_cross_entropy(net.classify(F.avg_pool2d(feats, 2)), ab, priors["bins"], priors["weights"])
    assert ce.shape == (2, 16, 16)
    assert torch.allclose(net.loss(L, ab), regression + 0.05 * ce.mean())
    net.loss(L, ab).backward()
    assert net.classify.weight.grad.abs().sum() > 0 and net.head.weight.grad.abs().sum() > 0
    assert needs_priors(unet_params(bins_weight=0.05)) and not needs_priors(unet_params())


def test_bins_decoding_is_an_annealed_mean_inside_the_bins_and_sweepable(priors):
    net = build_model(unet_params(bins_weight=0.05, decode="bins", temperature=0.2), priors).eval()
    ab = predict_ab(net, torch.rand(2, 32, 32) * 100)
    assert ab.shape == (2, 32, 32, 2)
    assert ab.abs().max() <= 40 + 1e-4  # a convex mix of the bins
    assert net.temperature == 0.2  # evaluate's temperature sweep applies to it
    assert not hasattr(build_model(unet_params(bins_weight=0.05), priors), "temperature")  # regression decodes


def test_decode_bins_without_training_the_bins_head_is_a_one_line_params_error():
    params = load_params()
    params["train"]["unet"]["decode"] = "bins"
    with pytest.raises(ParamsError, match=r"train.unet.decode: bins needs train.unet.bins_weight > 0"):
        validate(params)


def test_a_bins_head_checkpoint_carries_its_bins_and_loads_without_the_priors_stage(tmp_path, priors):
    params = load_params()
    params["train"] = unet_params(bins_weight=0.05, decode="bins")
    net = build_model(params["train"], priors)
    from colorize.training.engine import state_of, warmup_cosine

    optimizers = net.configure_optimizers(params["train"])
    sched = torch.optim.lr_scheduler.LambdaLR(optimizers["model"], warmup_cosine(1, 15))
    path = tmp_path / "model.pt"
    checkpoint.save(path, state_of(net, optimizers, sched, 1, params))
    again, ckpt = checkpoint.load_model(path)  # no data/priors here: the buffers are the bins
    assert torch.equal(checkpoint_priors(ckpt["model"])["bins"], priors["bins"])
    L = torch.rand(2, 32, 32) * 100
    assert torch.equal(predict_ab(again, L), predict_ab(net.eval(), L))


def test_flip_average_is_the_mean_of_both_predictions_and_mirror_symmetric():
    params = unet_params()
    plain = build_model(params).eval()
    flipped = build_model({**params, "flip_average": True})
    flipped.load_state_dict(plain.state_dict())
    L = torch.rand(2, 32, 40) * 100
    one, mirrored = predict_ab(plain, L), predict_ab(plain, L.flip(-1)).flip(-2)
    averaged = predict_ab(flipped, L)
    assert torch.allclose(averaged, (one + mirrored) / 2, atol=1e-5)
    assert not torch.allclose(one, mirrored, atol=1e-3)  # so the average is not the plain prediction
    assert torch.equal(predict_ab(flipped, L.flip(-1)), averaged.flip(-2))  # equivariant, to the bit
