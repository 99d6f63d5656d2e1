"""ImageNet weights for the resnet model's trunk: torchvision's ResNet-18 file.

The file is fetched through `colorize.common.fetch` (the download cache, retries, atomic
writes, one-line errors), so it is downloaded once per machine, and checked the way
torchvision checks it: its name ends in `-<prefix of its SHA-256>.pth`. The URL may point
at any mirror, as long as the file keeps its name.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch

from colorize.common.errors import UserError
from colorize.common.fetch import DownloadError, Transfer, fetch, file_digest

RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"  # torchvision's IMAGENET1K_V1
FULL_WIDTH = 64  # ResNet-18's conv1/layer1 channels: the only width the ImageNet weights fit
HASH_SUFFIX = re.compile(r"-([0-9a-f]{8,64})$")  # torchvision: <name>-<sha256 prefix>.pth


def hash_prefix(url: str) -> str:
    """The SHA-256 prefix in the file name of `url` (the hex after its last '-')."""
    stem = Path(unquote(urlparse(url).path)).stem
    match = HASH_SUFFIX.search(stem)
    if not match:
        raise UserError(f"{url}: the file name carries no SHA-256 prefix (torchvision names weights "
                        f"<name>-<8 hex>.pth), so it cannot be verified; keep the original file name on a mirror")
    return match.group(1)


def load_imagenet_resnet18(url: str = RESNET18_URL, transfer: Transfer = Transfer()) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet-18 state dict (RGB conv1, fc and all four stages).

    Cached where `colorize.common.fetch` caches everything ($COLORIZE_CACHE_DIR, else
    ~/.cache/colorize): a second call makes no request. A file whose SHA-256 does not
    start with the prefix in its name is deleted (a rerun fetches it again) and stops
    with a one-line error.
    """
    want = hash_prefix(url)
    path = fetch(url, transfer=transfer)
    got = file_digest(path, "sha256")
    if not got.startswith(want):
        path.unlink()
        raise DownloadError(f"{url}: checksum mismatch (sha256 {got[:len(want)]}..., the file name says {want}...); "
                            f"the download was deleted: rerun to fetch it again, or check that the mirror serves the right file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a verified file that torch cannot read is not a state dict
        raise UserError(f"{url}: not a torch state dict ({type(e).__name__}); point train.resnet.weights_url at torchvision's resnet18 weights") from None


def imagenet_to_trunk(state: dict[str, torch.Tensor], width: int, stages: int = 2) -> dict[str, torch.Tensor]:
    """The part of torchvision's resnet18 state dict that `ResNetTrunk` holds: conv1,
    bn1 and layer1..layer{stages} (fc, layer3 and layer4 are dropped).

    conv1's filters are summed over their RGB inputs: a gray image has R = G = B = L, and
    on it the RGB conv equals a 1-channel conv with the summed filter. (ImageNet's input
    normalisation is not L's; the batch norm after conv1 adapts during fine-tuning.)
    """
    if width != FULL_WIDTH:
        raise UserError(f"train.resnet.pretrained: the ImageNet weights are ResNet-18 at full width; "
                        f"set train.width: {FULL_WIDTH} (it is {width}) or pretrained: false")
    if "conv1.weight" not in state:
        raise UserError("resnet: the ImageNet weights have no conv1.weight; they are not torchvision's resnet18")
    keep = ("conv1.", "bn1.") + tuple(f"layer{i}." for i in range(1, stages + 1))
    trunk = {k: v for k, v in state.items() if k.startswith(keep)}
    trunk["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    return trunk
