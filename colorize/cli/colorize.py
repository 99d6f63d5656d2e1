"""Colorize photos at full resolution with a trained checkpoint.

    colorize INPUT... -o OUTDIR [--model models/model.pt]    (or python -m colorize)
        [--render-size N] [--side-by-side] [--overwrite] [--threads N] [--max-pixels N]

INPUTs are image files or folders; folders are searched recursively in sorted order
(symlinked subfolders not followed), skipping hidden files and folders (names starting
with "."), and skipping OUTDIR when it lies inside an input folder (so a rerun does not
colorize its own earlier outputs). Every other file is an input: one that is not an
image fails with a message, it is not silently passed over. FIFOs, sockets and devices
are skipped with a message, never opened (opening a FIFO waits for a writer forever); a
dangling or looping symlink fails with a message.

How an image is colorized
-------------------------
1. Decode with `colorize.common.images.decode` (the same safe decoder as ingest): EXIF
   orientation applied, palette/CMYK/16-bit/gray/alpha converted, an embedded ICC
   profile converted to sRGB. Its size guard is `--max-pixels` (default 200 MP, so 24 MP
   and larger photos pass; Pillow's own bomb limit is raised to match for the run).
2. L of CIE Lab at full resolution, in row bands of about 1 M pixels (float32 torch;
   the same formulas and constants as `colorize.common.colour`, with the sRGB linearisation as
   a 256-entry table since the input is 8-bit).
3. The model sees L resized (bicubic, antialiased) so that the SHORT side is the render
   size (`--render-size`, default the checkpoint's `ingest.image_size`, the scale it was
   trained at) and the long side keeps the aspect ratio, rounded to a multiple of the
   model's downsampling factor (8 for zhang/resnet/cnn, 2**depth for the U-Nets) and at
   most 16x the short side. A 6000x4000 photo is rendered at 96x64 with the default 64.
4. The predicted ab is upsampled bilinearly to full resolution (vertically once, then
   horizontally per row band: the same result as one bilinear resize, without a
   full-size float copy) and combined with the ORIGINAL full-resolution L.
5. Gamut: where L + ab falls outside sRGB, the chroma is scaled down (hue and L kept,
   8 bisection steps, to 0.4% of the chroma) until it fits, instead of clipping RGB, which would change L.
   So the output's L equals the input's L up to 8-bit rounding (at most ~0.26 L units).
   A colour photo is colorized from its own luminance, so it can be compared with the
   original.

Outputs
-------
- `OUTDIR/<path relative to the input folder, or the file name>` with the suffix
  replaced by `.png`. PNG always, also for JPEG inputs: lossless, so the L guarantee
  holds in the file (a JPEG at quality 95 with 4:2:0 chroma moves L by several units).
  Two inputs that would share a name (a.jpg and a.png) keep their suffix instead:
  a.jpg.png and a.png.png. Outputs are 8-bit RGB, whatever the input's depth.
- `--side-by-side` also writes `<name>_compare.png`: the input as grayscale (the neutral
  gray of its L, R = G = B) | the colorized image.
- Orientation: pixels are written upright and no EXIF is copied, so a viewer cannot
  rotate them a second time.
- ICC: the Lab math assumes sRGB. An input with an RGB ICC profile is converted to sRGB
  on decode (step 1), colorized, converted back to its own profile, and written with
  that profile embedded (for sRGB-tagged inputs the round trip is exact). Profiles that
  cannot describe an RGB PNG (CMYK, gray) or that LittleCMS cannot read are not
  embedded: the output is then plain (untagged, i.e. sRGB) PNG.
- Alpha (RGBA, LA, palette transparency) is composited over white, as ingest does (the
  model was trained on such images); the output has no alpha channel.
- Never over an input: OUTDIR may not be an input folder, and if any output path is an
  input file (same path, or the same file through a link), the whole run is refused
  (exit 2) before anything is written. An
  existing output is not replaced unless `--overwrite`: that image is skipped with a
  message. Files are written to a hidden temporary name and renamed, so a crash never
  leaves a half-written output.

Errors
------
A bad file (missing, empty, not an image, corrupt, truncated, over the pixel limit)
gets one line `colorize: PATH: reason` on stderr and the batch goes on. The last line,
on stdout, is `colorize: N written, M failed, K skipped`, and N + M + K is the number of
inputs found. Exit status 0 when none failed, 1 otherwise; 2 for a usage error (bad
checkpoint, OUTDIR onto an input, no inputs), as a one-line `error: ...`.

Checkpoints are data: loaded only through `colorize.training.checkpoint` (`torch.load(weights_only=True)`,
params validated like params.yaml, every weight's shape checked against them before the
model is built), the loader evaluate uses too.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms

from colorize.common import paths
from colorize.common.colour import (
    RGB_FROM_XYZ,
    WHITE_D65,
    XYZ_FROM_RGB,
    lab_f,
    lab_f_inv,
    lab_to_linear,
    linear_to_uint8,
    srgb_to_linear,
)
from colorize.common.errors import UserError, one_line, run_main
from colorize.common.files import atomic_write
from colorize.common.images import NotRead, check_regular_file, decode, read_file
from colorize.training import checkpoint
from colorize.training.models import predict_ab

DEFAULT_MODEL = paths.MODEL
MAX_PIXELS = 200_000_000  # default --max-pixels: decompression-bomb guard, well above 24 MP
MAX_FILE_BYTES = 2**30  # files larger than this are refused before reading them
BAND_PIXELS = 1 << 20  # pixels per row band: ~60 MB of float temporaries per band
MAX_ASPECT = 16  # the model's input is at most this many times longer than wide
GAMUT_STEPS = 8  # bisection steps of the chroma scale for out-of-gamut pixels (to 1/256 of the chroma)
GAMUT_TOL = 2e-6  # linear-RGB slack (float32 noise) before a colour counts as out of gamut
PNG_COMPRESS_LEVEL = 1  # zlib level: ~4x faster than Pillow's default 6 (1 MP: 0.07 s vs 0.31 s), files ~10-25% larger

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


# Y (relative to white) per channel code: Y = sum over channels of _Y_LUT[c][code],
# the Y row of colour.rgb_to_lab's XYZ for the 256 8-bit codes.
_LINEAR_CODES = srgb_to_linear(torch.arange(256, dtype=torch.float32) / 255.0)
_Y_LUT = [(_LINEAR_CODES * XYZ_FROM_RGB[1, c].float() / WHITE_D65[1].float()).numpy() for c in range(3)]


# ---------------------------------------------------------------------------- Lab math

def luminance(pixels: np.ndarray) -> torch.Tensor:
    """uint8 sRGB (H, W, 3) -> Lab L (H, W) float32, in row bands (bounded temporaries).
    Equals `colour.rgb_to_lab(pixels / 255)[..., 0]` up to float rounding (~1e-5)."""
    h, w = pixels.shape[:2]
    out = torch.empty((h, w), dtype=torch.float32)
    rows = max(1, BAND_PIXELS // max(w, 1))
    for r0 in range(0, h, rows):
        band = pixels[r0 : r0 + rows]
        y = np.take(_Y_LUT[0], band[..., 0])
        y += np.take(_Y_LUT[1], band[..., 1])
        y += np.take(_Y_LUT[2], band[..., 2])
        out[r0 : r0 + rows] = 116.0 * lab_f(torch.from_numpy(y)) - 16.0
    return out


def _in_gamut(linear: torch.Tensor) -> torch.Tensor:
    return (linear.amin(-1) >= -GAMUT_TOL) & (linear.amax(-1) <= 1.0 + GAMUT_TOL)


def fit_gamut(L: torch.Tensor, ab: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
    """Flat L (N,), ab (N, 2), linear (N, 3): for out-of-gamut pixels, replace `linear`
    by that of the largest chroma scale s in [0, 1] (ab * s, hue and L kept) that fits
    sRGB, by bisection. s = 0 (gray) always fits, so L is never changed."""
    bad = ~_in_gamut(linear)
    if not bool(bad.any()):
        return linear
    Lb, abb = L[bad], ab[bad]
    # colour.lab_to_linear with the s-independent parts hoisted out of the loop:
    # linear = X * col_x + Y * col_y + Z * col_z, X and Z from f(s), Y fixed.
    m = RGB_FROM_XYZ.float() * WHITE_D65.float()
    fy = (Lb + 16.0) / 116.0
    da, db = abb[:, 0] / 500.0, abb[:, 1] / 200.0
    y_part = lab_f_inv(fy)[:, None] * m[:, 1]

    def linear_at(s: torch.Tensor) -> torch.Tensor:
        x = lab_f_inv(fy + s * da)
        z = lab_f_inv((fy - s * db).clamp_min(0.0))
        return torch.addcmul(torch.addcmul(y_part, x[:, None], m[:, 0]), z[:, None], m[:, 2])

    lo = torch.zeros(len(Lb))
    step = 0.5
    for _ in range(GAMUT_STEPS):  # lo stays feasible; try lo + step, halve the step
        trial = lo + step
        lo = torch.where(_in_gamut(linear_at(trial)), trial, lo)
        step /= 2
    linear[bad] = lab_to_linear(Lb, abb * lo[:, None])
    return linear


def compose_band(L: torch.Tensor, ab: torch.Tensor) -> np.ndarray:
    """L (h, w) and ab (h, w, 2) -> uint8 sRGB (h, w, 3), gamut-fitted."""
    flat_L, flat_ab = L.reshape(-1), ab.reshape(-1, 2)
    linear = fit_gamut(flat_L, flat_ab, lab_to_linear(flat_L, flat_ab))
    return linear_to_uint8(linear).reshape(*L.shape, 3).numpy()


def gray_band(L: torch.Tensor) -> np.ndarray:
    """L (h, w) -> the neutral gray of that L, uint8 (h, w, 3) with R = G = B exactly
    (a neutral colour's linear R, G, B all equal its Y)."""
    y = linear_to_uint8(lab_f_inv((L + 16.0) / 116.0))
    return y[..., None].expand(*L.shape, 3).numpy()


# ---------------------------------------------------------------------------- model

def model_factor(train_params: dict) -> int:
    """How many times the model halves its input (params._cross_checks' rule)."""
    if train_params["model"] in ("zhang", "resnet", "cnn"):
        return 8
    return 2 ** train_params["depth"]


def load_model(path: Path) -> tuple[torch.nn.Module, dict]:
    """A checkpoint as train.py writes it -> (model in eval mode, validated params),
    through the one safe loader (colorize.training.checkpoint: weights_only, params validated,
    shapes checked before the model is built). Every problem is a one-line UserError
    naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (train one with: dvc repro train; or pass --model)")
    model, ckpt = checkpoint.load_model(path)
    return model, ckpt["args"]


def render_shape(height: int, width: int, render: int, factor: int) -> tuple[int, int]:
    """(h, w) the model sees: short side `render`, long side by the aspect ratio, rounded
    to a multiple of `factor`, at most MAX_ASPECT * render."""
    short, long = min(height, width), max(height, width)
    n_long = round(render * long / short / factor) * factor
    n_long = min(max(n_long, render), MAX_ASPECT * render)
    return (render, n_long) if height <= width else (n_long, render)


@torch.no_grad()
def predict_small_ab(model: torch.nn.Module, L: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Full-resolution L (H, W) -> ab (1, 2, h, w) in Lab units at the render shape."""
    small = F.interpolate(L[None, None], size=shape, mode="bicubic", antialias=True, align_corners=False)
    small = small[:, 0].clamp(0.0, 100.0)
    return predict_ab(model, small).permute(0, 3, 1, 2)


@torch.no_grad()
def colorize_pixels(pixels: np.ndarray, model: torch.nn.Module, render: int, factor: int,
                    side_by_side: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 sRGB (H, W, 3) -> (colorized uint8 (H, W, 3), gray | colorized (H, 2W, 3) or None).
    The colorized image has the input's L at every pixel (up to 8-bit rounding)."""
    h, w = pixels.shape[:2]
    L = luminance(pixels)
    ab_small = predict_small_ab(model, L, render_shape(h, w, render, factor))
    # Bilinear is separable: resize the height once (small: h x render_w), then each
    # band's width. Same-height interpolation is the identity, so this is one resize.
    ab_tall = F.interpolate(ab_small, size=(h, ab_small.shape[-1]), mode="bilinear", align_corners=False)
    out = np.empty((h, w, 3), dtype=np.uint8)
    compare = np.empty((h, 2 * w, 3), dtype=np.uint8) if side_by_side else None
    rows = max(1, BAND_PIXELS // w)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        ab = F.interpolate(ab_tall[:, :, r0:r1], size=(r1 - r0, w), mode="bilinear", align_corners=False)
        out[r0:r1] = compose_band(L[r0:r1], ab[0].permute(1, 2, 0))
        if compare is not None:
            compare[r0:r1, :w] = gray_band(L[r0:r1])
            compare[r0:r1, w:] = out[r0:r1]
    return out, compare


# ---------------------------------------------------------------------------- files

@dataclass
class Job:
    src: Path  # the input file, as found
    rel: Path  # its name relative to the input folder (or its file name)
    outputs: list[Path] = field(default_factory=list)  # [colorized, compare?]


def _walk(folder: Path, exclude: Path | None) -> list[Path]:
    """Files under folder, recursively, sorted by relative path; hidden names and the
    `exclude` subtree (OUTDIR) skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        rootp = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (exclude is not None and _same_path(rootp / d, exclude)))
        found += [rootp / f for f in files if not f.startswith(".")]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _same_path(a: Path, b: Path) -> bool:
    return _resolve(a) == _resolve(b)


def _resolve(path: Path) -> Path:
    """path.resolve(), or the absolute path where a symlink loop makes that fail
    (RuntimeError in Python 3.11, OSError in later versions)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def find_inputs(inputs: list[Path], outdir: Path) -> tuple[list[Job], list[Path]]:
    """(jobs in order, missing paths). The same file given twice is done once."""
    jobs, missing, seen = [], [], set()
    for arg in inputs:
        if arg.is_dir():
            out_inside = outdir if _is_strictly_inside(outdir, arg) else None
            pairs = [(p, p.relative_to(arg)) for p in _walk(arg, out_inside)]
        elif arg.exists() or arg.is_symlink():  # a broken link: colorize_file says how
            pairs = [(arg, Path(arg.name))]
        else:
            missing.append(arg)
            continue
        for src, rel in pairs:
            key = _resolve(src)
            if key not in seen:
                seen.add(key)
                jobs.append(Job(src, rel))
    return jobs, missing


def _is_strictly_inside(child: Path, parent: Path) -> bool:
    c, p = _resolve(child), _resolve(parent)
    return c != p and p in c.parents


def plan_outputs(jobs: list[Job], outdir: Path, side_by_side: bool) -> None:
    """Name every job's outputs; refuse (UserError) names that collide or that would
    write onto an input."""
    def names(rel: Path, keep_suffix: bool) -> list[Path]:
        main = outdir / (rel.parent / f"{rel.name}.png" if keep_suffix else rel_png(rel))
        return [main, main.with_name(f"{main.stem}_compare.png")] if side_by_side else [main]

    by_name: dict[Path, int] = {}
    for job in jobs:
        by_name[rel_png(job.rel)] = by_name.get(rel_png(job.rel), 0) + 1
    for job in jobs:  # a.jpg and a.png in one folder: both keep their suffix
        job.outputs = names(job.rel, keep_suffix=by_name[rel_png(job.rel)] > 1)
    owner: dict[Path, Job] = {}
    for job in jobs:
        for out in job.outputs:
            if out in owner:
                raise UserError(f"{owner[out].src} and {job.src} would both be written to {out}; "
                                "colorize them into separate output folders")
            owner[out] = job
    input_ids = {}
    for job in jobs:
        try:
            st = job.src.stat()
            input_ids[(st.st_dev, st.st_ino)] = job.src
        except OSError:
            pass
        input_ids[_resolve(job.src)] = job.src
    for out, job in owner.items():
        hit = input_ids.get(_resolve(out))
        if hit is None and out.exists():
            st = out.stat()
            hit = input_ids.get((st.st_dev, st.st_ino))
        if hit is not None:
            raise UserError(f"-o {outdir} would write {out} over the input {hit}; choose another output folder")


def rel_png(rel: Path) -> Path:
    return rel.with_suffix(".png") if rel.suffix else rel.parent / f"{rel.name}.png"


@dataclass
class Settings:
    model: torch.nn.Module
    render: int
    factor: int
    side_by_side: bool = False
    overwrite: bool = False
    max_pixels: int = MAX_PIXELS


def _output_profile(data: bytes, notes: str) -> tuple[ImageCms.ImageCmsProfile, bytes] | None:
    """(profile, its bytes as in the file) when decode converted the input from its own RGB
    ICC profile to sRGB: the output goes back into that space and carries the same bytes."""
    if "icc->sRGB" not in notes:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            icc = im.info.get("icc_profile")
        if not icc:
            return None
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return (profile, icc) if profile.profile.xcolor_space.strip() == "RGB" else None
    except Exception:  # noqa: BLE001 - a profile we cannot read is not embedded
        return None


def _save_png(pixels: np.ndarray, path: Path, profile: tuple[ImageCms.ImageCmsProfile, bytes] | None) -> None:
    im = Image.fromarray(pixels, "RGB")
    extra = {}
    if profile is not None:
        im = ImageCms.profileToProfile(im, _SRGB, profile[0], outputMode="RGB")  # back to the input's space
        extra["icc_profile"] = profile[1]
    atomic_write(path, lambda tmp: im.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL, **extra))


def colorize_file(job: Job, s: Settings) -> tuple[str, str]:
    """Colorize one file -> (status, reason): status written, failed or skipped."""
    existing = [o for o in job.outputs if o.exists() or o.is_symlink()]
    if existing and not s.overwrite:
        return "skipped", f"{existing[0]} exists (use --overwrite to replace it)"
    if any(o.is_dir() for o in existing):
        return "failed", f"{next(o for o in existing if o.is_dir())} is a folder"
    try:
        size = check_regular_file(job.src).st_size
        if size > MAX_FILE_BYTES:
            return "failed", f"file is {size / 2**30:.1f} GiB, over the {MAX_FILE_BYTES / 2**30:.0f} GiB limit"
        data = read_file(job.src)
    except NotRead as e:  # a FIFO, socket or device is no photo: skipped; a broken link failed
        return ("skipped" if e.status == "not_regular_file" else "failed"), e.reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's bomb/EXIF chatter: decode's checks decide
        d = decode(data, s.max_pixels)
    if d.status != "ok":
        if d.status == "too_large":  # decode's own check (size known) or Pillow's at 2x the limit
            pillow = re.search(r"Image size \((\d+) pixels\)", d.error)
            size = f"{d.width}x{d.height}" if d.width else f"{pillow[1]} pixels" if pillow else "the image"
            return "failed", f"{size} is over the --max-pixels limit {s.max_pixels} (decompression-bomb guard)"
        return "failed", f"{d.status.replace('_', ' ')}: {d.error}"
    profile = _output_profile(data, d.notes)
    del data
    pixels = d.pixels
    d.pixels = None
    try:
        colour, compare = colorize_pixels(pixels, s.model, s.render, s.factor, s.side_by_side)
        del pixels
        _save_png(colour, job.outputs[0], profile)
        if compare is not None:
            _save_png(compare, job.outputs[1], profile)
    except MemoryError:
        return "failed", f"out of memory at {d.width}x{d.height}"
    except UserError as e:  # files.atomic_write: disk full, read-only, ...
        return "failed", str(e)
    return "written", ""


@dataclass
class Summary:
    written: int = 0
    failed: int = 0
    skipped: int = 0

    def line(self) -> str:
        return f"colorize: {self.written} written, {self.failed} failed, {self.skipped} skipped"


def colorize(inputs: list[Path], outdir: Path, model_path: Path = DEFAULT_MODEL, render_size: int | None = None,
             side_by_side: bool = False, overwrite: bool = False, max_pixels: int = MAX_PIXELS,
             progress: bool | None = None) -> Summary:
    """The CLI without argument parsing: per-file lines on stderr, returns the counts.
    Raises UserError for problems with the run as a whole (before writing anything)."""
    from tqdm import tqdm

    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"-o {outdir}: exists and is not a folder")
    if max_pixels < 1:
        raise UserError(f"--max-pixels must be >= 1, got {max_pixels}")
    for arg in map(Path, inputs):
        if arg.is_dir() and _same_path(arg, outdir):
            raise UserError(f"-o {outdir} is an input folder: outputs would mix with the inputs (and be read as "
                            "inputs next time); choose another output folder")
    jobs, missing = find_inputs([Path(p) for p in inputs], outdir)
    if not jobs and not missing:
        raise UserError(f"no input files found in {' '.join(map(str, inputs))} (hidden files are skipped)")
    plan_outputs(jobs, outdir, side_by_side)
    model, params = load_model(model_path)
    factor = model_factor(params["train"])
    render = params["ingest"]["image_size"] if render_size is None else render_size
    if render < factor or render % factor or render > 4096:
        raise UserError(f"--render-size must be a multiple of {factor} (the model halves its input "
                        f"{factor.bit_length() - 1} times) between {factor} and 4096, got {render}")
    settings = Settings(model, render, factor, side_by_side, overwrite, max_pixels)

    summary = Summary()
    for path in missing:
        tqdm.write(f"colorize: {path}: no such file or folder", file=sys.stderr)
        summary.failed += 1
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow refuses at twice this; decode at once
    try:
        bar = tqdm(jobs, desc="colorize", unit="img", file=sys.stderr, disable=None if progress is None else not progress)
        for job in bar:
            try:
                status, reason = colorize_file(job, settings)
            except Exception as e:  # noqa: BLE001 - one bad file never stops the batch
                status, reason = "failed", f"{type(e).__name__}: {one_line(str(e), 300)}"
            setattr(summary, status, getattr(summary, status) + 1)
            if status != "written":
                tqdm.write(f"colorize: {job.src}: {'skipped: ' if status == 'skipped' else ''}{reason}", file=sys.stderr)
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="colorize",
        description="Colorize photos at full resolution: the model predicts colour (ab) at a small "
                    "render size, which is upsampled and combined with each image's own full-resolution "
                    "luminance. Writes PNGs; never overwrites an input.")
    ap.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (recursive; hidden files skipped)")
    ap.add_argument("-o", "--outdir", required=True, type=Path, help="output folder")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"checkpoint (default {DEFAULT_MODEL})")
    ap.add_argument("--render-size", type=int, default=None, metavar="N",
                    help="short side of the model's input, a multiple of its downsampling factor "
                         "(default: the checkpoint's ingest.image_size)")
    ap.add_argument("--side-by-side", action="store_true", help="also write NAME_compare.png: grayscale | colorized")
    ap.add_argument("--overwrite", action="store_true", help="replace existing outputs (never inputs)")
    ap.add_argument("--threads", type=int, default=1, metavar="N",
                    help="torch CPU threads (default 1: the work is elementwise and memory-bound, and "
                         "extra threads slow it down badly when the cores are shared; 0 = torch's default)")
    ap.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                    help=f"refuse images with more pixels (decompression-bomb guard; default {MAX_PIXELS})")
    args = ap.parse_args(argv)
    if args.threads < 0:
        ap.error(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = colorize(args.inputs, args.outdir, args.model, args.render_size, args.side_by_side,
                       args.overwrite, args.max_pixels)
    print(summary.line())
    if summary.failed:
        sys.exit(1)


def run() -> None:
    """The `colorize` console script: one-line errors, exit status 2 for a usage error."""
    run_main(main)


if __name__ == "__main__":
    run()
