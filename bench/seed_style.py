"""The seed-style way of doing each step: the baseline every `make bench` ratio is taken against.

The seed projects decoded every JPEG in full, converted it with scikit-image in float64
one image at a time, and did it inside a torch Dataset's `__getitem__`, so all of it
was repeated every epoch ("my network takes about 24h"; converting images to arrays
"filled up the RAM"). This module writes that way down once, so the benchmark runs it
in the same process, on the same files, as the pipeline's way:

- `ingest_one`: full decode (no reduced-size DCT decoding), centre crop, scikit-image
  float64 anti-aliased resize;
- `lab_one`: scikit-image `rgb2lab` in float64;
- `bin_counts`: ab-bin counts by `rgb2lab` and an argmin over the bin centres;
- `SeedDataset`: the two above plus a random crop and flip, per item, every epoch;
- `evaluate_one`: one image through the model, scikit-image `lab2rgb` and metrics;
- `colorize_file`: a photo at full resolution in float64 (the 24 MP memory baseline).

Nothing in the pipeline uses it. Run as a script it colorizes one file, for the
benchmark's peak-memory measurement in a fresh process:

    python -m bench.seed_style colorize IN.jpg OUT.png MODEL.pt
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

L_CENT, L_NORM, AB_NORM = 50.0, 100.0, 110.0  # the same normalisation as colorize/common/colour.py


def decode_full(path: Path) -> np.ndarray:
    """The whole JPEG at full size, as uint8 RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def ingest_one(path: Path, size: int) -> np.ndarray:
    """Full decode, centre crop to a square, float64 anti-aliased resize to size x size."""
    from skimage.transform import resize

    rgb = decode_full(path)
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = rgb[top : top + side, left : left + side]
    small = resize(square, (size, size), anti_aliasing=True)  # float64 in [0, 1]
    return (small * 255.0 + 0.5).astype(np.uint8)


def lab_one(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float64 Lab, scikit-image."""
    from skimage.color import rgb2lab

    return rgb2lab(rgb)


class SeedDataset(torch.utils.data.Dataset):
    """Decode, resize and convert one file per item, every epoch; then crop and flip."""

    def __init__(self, paths: list[Path], size: int, crop: int, seed: int = 0):
        self.paths, self.size, self.crop = list(paths), size, crop
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        lab = lab_one(ingest_one(self.paths[i], self.size))
        if self.crop and self.crop < self.size:
            top, left = self.rng.integers(0, self.size - self.crop + 1, 2)
            lab = lab[top : top + self.crop, left : left + self.crop]
        if self.rng.random() < 0.5:
            lab = lab[:, ::-1]
        L = (lab[..., 0] - L_CENT) / L_NORM
        ab = lab[..., 1:] / AB_NORM
        return torch.from_numpy(L[None].astype(np.float32)), torch.from_numpy(ab.transpose(2, 0, 1).astype(np.float32))


def bin_counts(images: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Pixels per ab bin the way one writes it first: rgb2lab per image in float64, the
    nearest of the Q bin centres by argmin over all of them, bincount."""
    counts = np.zeros(len(bins), dtype=np.int64)
    for im in images:
        ab = lab_one(im)[..., 1:].reshape(-1, 2)
        nearest = ((ab[:, None, :] - bins[None]) ** 2).sum(-1).argmin(1)
        counts += np.bincount(nearest, minlength=len(bins))
    return counts


def seed_loader(paths: list[Path], size: int, crop: int, batch_size: int, seed: int = 0):
    return torch.utils.data.DataLoader(SeedDataset(paths, size, crop, seed), batch_size=batch_size, shuffle=True,
                                       num_workers=0, generator=torch.Generator().manual_seed(seed))


def colourfulness_one(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness of one uint8 image, in numpy float64."""
    x = rgb.astype(np.float64)
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


@torch.no_grad()
def evaluate_one(model: torch.nn.Module, rgb: np.ndarray) -> dict[str, float]:
    """One test image: Lab, the model on its L, back to RGB and four metrics, with scikit-image."""
    from skimage.color import deltaE_ciede2000, lab2rgb, rgb2lab
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    lab = rgb2lab(rgb)
    x = torch.from_numpy(((lab[..., 0] - L_CENT) / L_NORM)[None, None].astype(np.float32))
    ab = model.predict(x)[0].permute(1, 2, 0).numpy().astype(np.float64) * AB_NORM
    pred = (lab2rgb(np.concatenate([lab[..., :1], ab], -1)) * 255.0).round().astype(np.uint8)
    return {
        "psnr": peak_signal_noise_ratio(rgb, pred, data_range=255),
        "ssim": structural_similarity(rgb, pred, channel_axis=-1, data_range=255, win_size=7),
        "delta_e": float(deltaE_ciede2000(lab, rgb2lab(pred)).mean()),
        "colourfulness": colourfulness_one(pred),
    }


@torch.no_grad()
def colorize_file(src: Path, dst: Path, model_path: Path) -> None:
    """A photo at full resolution the float64 way: rgb2lab of the whole image, the model
    on a resized L, ab resized back, lab2rgb of the whole image."""
    from skimage.color import lab2rgb, rgb2lab
    from skimage.transform import resize

    from colorize.cli import colorize as C

    model, params = C.load_model(model_path)
    rgb = decode_full(src)
    h, w = rgb.shape[:2]
    lab = rgb2lab(rgb)
    shape = C.render_shape(h, w, params["ingest"]["image_size"], C.model_factor(params["train"]))
    small_L = resize(lab[..., 0], shape, anti_aliasing=True)
    x = torch.from_numpy(((small_L - L_CENT) / L_NORM)[None, None].astype(np.float32))
    ab_small = model.predict(x)[0].permute(1, 2, 0).numpy().astype(np.float64) * AB_NORM
    ab = resize(ab_small, (h, w), order=1)
    out = lab2rgb(np.concatenate([lab[..., :1], ab], -1))
    Image.fromarray((out * 255.0).round().astype(np.uint8)).save(dst)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "colorize":
        raise SystemExit("usage: python -m bench.seed_style colorize IN OUT MODEL")
    torch.set_num_threads(1)  # as the pipeline's colorize CLI (--threads 1)
    colorize_file(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
