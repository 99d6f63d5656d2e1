"""The garden: a seeded generator of synthetic flower photos with planted, recorded defects.

It is the bundled default data source, so the whole pipeline runs offline and every
data-quality check has ground truth to be tested against.

Design
------
* Learnable colour. Each species ties its palette to its shape: sunflowers have many
  narrow yellow petals around a big brown seed disc, poppies 4-5 broad scarlet petals
  around a black centre, and so on. Hue and brightness are jittered only a little, so
  a model that sees luminance alone can tell the species and hence the colour.
  Backgrounds (foliage, sky, soil) follow the same rule: greens, blues, browns.
* Photo-like finish. Everything is drawn at twice the size and box-downsampled
  (anti-aliasing), then a smooth lighting gradient, a small Gaussian blur and sensor
  noise are applied.
* Prefix stability. File `i` depends only on (seed, i): its content comes from
  `default_rng([seed, IMAGE_STREAM, i])`, and which files are defects comes from a
  schedule drawn per block of BLOCK files. Asking for more images only appends files.
  Copies take their original from lower indices, which a shorter run also has.
* Defects. Per block, `round(defect_rate * BLOCK)` files are defects or awkward-but-valid
  formats; their kinds walk a fixed sequence (DEFECT_WEIGHTS, by highest averages)
  that starts with one of every kind, so the first block already holds them all (that
  block gets at least len(DEFECT_WEIGHTS) defects; later blocks make up for it).
  Every defect that can be checked is checked when written: corrupt and truncated
  files are re-opened to make sure Pillow really refuses them.
* Byte-identical reruns. Pillow writes no timestamps into JPEG/PNG/GIF; JPEG quality
  is fixed; the truth CSV has fixed columns and line endings.
"""
from __future__ import annotations

import colorsys
import csv
import io
import math
import re
import struct
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

SPECIES: tuple[str, ...] = ("sunflower", "poppy", "cornflower", "daisy", "lavender", "tulip")

# How often each non-clean kind appears, per 150 defects (the count at n=1000 with the
# default 15% rate). Awkward formats (png_alpha .. palette) are valid images a robust
# ingest must decode; bomb must be refused by a decompression-bomb guard.
DEFECT_WEIGHTS: dict[str, int] = {
    "grayscale": 17,
    "sepia": 8,
    "tinted": 8,
    "exact_duplicate": 15,
    "near_duplicate": 17,
    "tiny": 8,
    "truncated": 8,
    "corrupt": 6,
    "zero_byte": 5,
    "not_image": 6,
    "irrelevant": 26,
    "png_alpha": 6,
    "cmyk": 6,
    "png16_gray": 5,
    "palette": 6,
    "bomb": 3,
}
DEFECT_KINDS: tuple[str, ...] = ("none", *DEFECT_WEIGHTS)

TRUTH_FILE = "garden_truth.csv"
TRUTH_COLUMNS = ("path", "label", "defect", "defect_detail", "defect_of")

BLOCK = 100  # defect schedule granularity; the first block holds every kind
RESERVED_CLEAN = 4  # the first files are always clean, so copies have an original
IMAGE_STREAM, SCHEDULE_STREAM = 1, 2  # keep the two RNG streams apart
SUPERSAMPLE = 2
JPEG_QUALITY = 90
BOMB_SIDE = 30_000  # 900 Mpx: far beyond Pillow's 2 * MAX_IMAGE_PIXELS bomb error

# Colour photographs shipped inside the scikit-image wheel (no download needed).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "retina")

_EXTS = ("jpg", "png", "gif")
_NAME_RE = re.compile(rf"img_(\d{{5,}})\.(?:{'|'.join(_EXTS)})")


@dataclass(frozen=True)
class GardenConfig:
    n_images: int = 1000  # total files written, defects included
    seed: int = 0
    min_size: int = 96
    max_size: int = 128
    defect_rate: float = 0.15  # share of files that are planted defects/awkward formats


# --------------------------------------------------------------------------- schedule

def _defect_sequence(length: int) -> list[str]:
    """Kinds in the order defect slots get them: one of each first, then by weight.

    Highest averages (Sainte-Lague) is house-monotone, so the counts among the first k
    slots never shrink as k grows -- the property prefix stability needs.
    """
    kinds = list(DEFECT_WEIGHTS)
    seats = dict.fromkeys(kinds, 1)
    sequence = kinds[:length]
    while len(sequence) < length:
        kind = max(kinds, key=lambda k: DEFECT_WEIGHTS[k] / (2 * seats[k] + 1))
        seats[kind] += 1
        sequence.append(kind)
    return sequence


def _schedule(cfg: GardenConfig) -> list[str]:
    """Kind of every file index; index i's kind does not depend on n_images."""
    n_blocks = -(-cfg.n_images // BLOCK)
    counts, placed = [], 0
    for block in range(n_blocks):
        free = BLOCK - (RESERVED_CLEAN if block == 0 else 0)
        wanted = round(cfg.defect_rate * BLOCK * (block + 1))
        if cfg.defect_rate > 0:
            wanted = max(wanted, len(DEFECT_WEIGHTS))
        counts.append(min(free, max(0, wanted - placed)))
        placed += counts[-1]
    sequence = iter(_defect_sequence(placed))
    kinds: list[str] = []
    for block, count in enumerate(counts):
        rng = np.random.default_rng([cfg.seed, SCHEDULE_STREAM, block])
        first = RESERVED_CLEAN if block == 0 else 0
        block_kinds = ["none"] * BLOCK
        for slot in rng.choice(np.arange(first, BLOCK), size=count, replace=False):
            block_kinds[slot] = next(sequence)
        kinds += block_kinds
    return kinds[: cfg.n_images]


# --------------------------------------------------------------------------- drawing

def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h % 360) / 360, min(max(s, 0), 1), min(max(v, 0), 1))
    return round(r * 255), round(g * 255), round(b * 255)


class _Canvas:
    """Draws on the photo and, for flower parts, on a foreground mask (for png_alpha)."""

    def __init__(self, background: Image.Image):
        self.image = background
        self.mask = Image.new("L", background.size, 0)
        self._photo = ImageDraw.Draw(self.image)
        self._mask = ImageDraw.Draw(self.mask)

    def polygon(self, points, fill, outline=None, width=1):
        self._photo.polygon(points, fill=fill, outline=outline, width=width)
        self._mask.polygon(points, fill=255)

    def ellipse(self, cx, cy, rx, ry, fill):
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        self._photo.ellipse(box, fill=fill)
        self._mask.ellipse(box, fill=255)

    def line(self, points, fill, width):
        self._photo.line(points, fill=fill, width=max(1, round(width)), joint="curve")
        self._mask.line(points, fill=255, width=max(1, round(width)))


def _blade(cx, cy, angle, r0, r1, half_width, profile, squash=1.0, n=10):
    """Outline of a petal/leaf lying along `angle` from radius r0 to r1 (y squashed)."""
    t = np.linspace(0.0, 1.0, n)
    along = r0 + (r1 - r0) * t
    across = half_width * profile(t)
    xs = np.concatenate([along, along[::-1]])
    ys = np.concatenate([across, -across[::-1]])
    c, s = math.cos(angle), math.sin(angle)
    px, py = xs * c - ys * s, (xs * s + ys * c) * squash
    return list(zip(cx + px, cy + py))


def _pointed(t):
    return np.sin(np.pi * t) ** 0.8


def _oval(t):
    return np.sqrt(np.sin(np.pi * t))


def _leaf(t):
    return np.sin(np.pi * t) ** 1.2


def _green(rng, dark=0.0):
    return _hsv(rng.uniform(88, 125), rng.uniform(0.55, 0.8), rng.uniform(0.35, 0.55) - dark)


def _stem_and_leaves(canvas, rng, cx, cy, size, height, n_leaves):
    """A stem from (cx, cy) to below the frame, with pointed leaves along it."""
    bottom_x = cx + rng.uniform(-0.15, 0.15) * height
    width = max(2.0, 0.07 * size)
    colour = _green(rng)
    canvas.line([(cx, cy), ((cx + bottom_x) / 2 + rng.uniform(-3, 3), (cy + height) / 2), (bottom_x, height + 5)],
                colour, width)
    for _ in range(n_leaves):
        t = rng.uniform(0.3, 0.8)
        x, y = cx + (bottom_x - cx) * t, cy + (height - cy) * t
        side = rng.choice([-1, 1])
        angle = -math.pi / 2 + side * rng.uniform(0.5, 1.2)
        length = size * rng.uniform(0.8, 1.4)
        canvas.polygon(_blade(x, y, angle, 0, length, length * rng.uniform(0.15, 0.25), _leaf), _green(rng, 0.05))


def _seed_disc(canvas, rng, cx, cy, radius, squash, base, dot, dot_size):
    """A disc with florets on a Fermat spiral: the texture of sunflower/daisy centres."""
    canvas.ellipse(cx, cy, radius, radius * squash, base)
    spacing = max(dot_size * 2.1, 1.5)
    count = int((radius / spacing) ** 2 * 0.9)
    k = np.arange(1, count + 1)
    r = spacing * np.sqrt(k)
    keep = r < radius * 0.95
    angles = k * math.radians(137.508)
    for x, y in zip(cx + r[keep] * np.cos(angles[keep]), cy + r[keep] * np.sin(angles[keep]) * squash):
        canvas.ellipse(x, y, dot_size, dot_size * squash, dot)


def _draw_sunflower(canvas, rng, cx, cy, size, squash):
    n = int(rng.integers(20, 33))
    hue, turn = rng.uniform(42, 52), rng.uniform(0, 2 * math.pi)
    for ring, (shade, offset) in enumerate(((0.78, 0.5), (1.0, 0.0))):  # back ring darker
        for k in range(n):
            angle = turn + (k + offset) * 2 * math.pi / n + rng.normal(0, 0.04)
            colour = _hsv(hue + rng.normal(0, 2) - 6 * (1 - shade), rng.uniform(0.85, 1.0),
                          shade * rng.uniform(0.9, 1.0))
            length = size * rng.uniform(0.9, 1.05) * (1.04 if ring == 0 else 1.0)
            canvas.polygon(_blade(cx, cy, angle, size * 0.3, length, size * 1.7 / n, _pointed, squash), colour)
    disc = size * rng.uniform(0.4, 0.5)
    _seed_disc(canvas, rng, cx, cy, disc, squash, _hsv(rng.uniform(20, 30), 0.75, rng.uniform(0.18, 0.26)),
               _hsv(rng.uniform(25, 35), 0.7, rng.uniform(0.32, 0.42)), max(1.0, disc * 0.045))
    canvas.ellipse(cx, cy, disc * 0.45, disc * 0.45 * squash, _hsv(rng.uniform(70, 90), 0.5, 0.15))


def _draw_poppy(canvas, rng, cx, cy, size, squash):
    n = int(rng.integers(4, 6))
    hue, turn = rng.uniform(-4, 6), rng.uniform(0, 2 * math.pi)
    phi = np.linspace(0, 2 * math.pi, 28, endpoint=False)
    for k in range(n):
        angle = turn + k * 2 * math.pi / n
        petal_r = size * rng.uniform(0.5, 0.6)
        px, py = cx + 0.42 * size * math.cos(angle), cy + 0.42 * size * math.sin(angle) * squash
        crumple = 1 + 0.05 * np.sin(phi * rng.integers(3, 6) + rng.uniform(0, 6))
        shade = rng.uniform(0.78, 0.98)
        points = list(zip(px + petal_r * crumple * np.cos(phi), py + petal_r * crumple * np.sin(phi) * squash))
        canvas.polygon(points, _hsv(hue + rng.normal(0, 2), rng.uniform(0.85, 0.97), shade),
                       outline=_hsv(hue, 0.9, shade * 0.6), width=2)
        # the black blotch at each petal base that real field poppies have
        bx, by = cx + 0.2 * size * math.cos(angle), cy + 0.2 * size * math.sin(angle) * squash
        canvas.ellipse(bx, by, size * 0.14, size * 0.14 * squash, _hsv(0, 0.3, 0.08))
    for a in np.linspace(0, 2 * math.pi, 18, endpoint=False):  # ring of dark stamens
        canvas.ellipse(cx + 0.2 * size * math.cos(a), cy + 0.2 * size * math.sin(a) * squash,
                       size * 0.035, size * 0.035 * squash, _hsv(0, 0, 0.05))
    canvas.ellipse(cx, cy, size * 0.12, size * 0.12 * squash, _hsv(rng.uniform(70, 90), 0.45, 0.3))


def _polar(cx, cy, angle, offsets, radii, squash):
    angles = angle + np.asarray(offsets)
    return list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles) * squash))


def _draw_cornflower(canvas, rng, cx, cy, size, squash):
    n = int(rng.integers(7, 10))
    hue, turn = rng.uniform(224, 236), rng.uniform(0, 2 * math.pi)
    half = math.pi / n * 0.9
    teeth = np.linspace(-half, half, 9)
    for k in range(n):
        angle = turn + k * 2 * math.pi / n + rng.normal(0, 0.05)
        length = size * rng.uniform(0.9, 1.05)
        # a funnel that flares into a serrated rim (teeth alternate between two radii),
        # with a darker inner funnel giving each petal a luminance signature
        for scale, colour in ((1.0, _hsv(hue + rng.normal(0, 3), rng.uniform(0.7, 0.9), rng.uniform(0.8, 0.95))),
                              (0.6, _hsv(hue + 12, 0.85, 0.5))):
            rim = np.where(np.arange(9) % 2 == 0, 1.0, 0.82) * length * scale
            offsets = np.concatenate([[-0.25 * half, -0.75 * half], teeth * scale, [0.75 * half, 0.25 * half]])
            radii = np.concatenate([[0.12 * size, 0.6 * length * scale], rim, [0.6 * length * scale, 0.12 * size]])
            canvas.polygon(_polar(cx, cy, angle, offsets, radii, squash), colour)
    canvas.ellipse(cx, cy, size * 0.2, size * 0.2 * squash, _hsv(hue + 35, 0.7, 0.28))
    for _ in range(14):  # purple-black stamen tips
        a, r = rng.uniform(0, 2 * math.pi), size * 0.15 * math.sqrt(rng.uniform())
        canvas.ellipse(cx + r * math.cos(a), cy + r * math.sin(a) * squash, size * 0.03, size * 0.03,
                       _hsv(hue + 40, 0.5, 0.12))


def _draw_daisy(canvas, rng, cx, cy, size, squash):
    n = int(rng.integers(21, 35))
    turn = rng.uniform(0, 2 * math.pi)
    for k in range(n):
        angle = turn + k * 2 * math.pi / n + rng.normal(0, 0.03)
        shade = rng.uniform(0.9, 1.0)
        canvas.polygon(_blade(cx, cy, angle, size * 0.15, size * rng.uniform(0.88, 1.02), size * 1.0 / n + 1,
                              _oval, squash),
                       _hsv(50, rng.uniform(0.0, 0.06), shade), outline=_hsv(40, 0.08, shade * 0.72))
    disc = size * rng.uniform(0.22, 0.28)
    _seed_disc(canvas, rng, cx, cy, disc, squash, _hsv(rng.uniform(44, 50), 0.9, 0.92),
               _hsv(rng.uniform(36, 42), 0.95, 0.72), max(1.0, disc * 0.07))


def _draw_tulip(canvas, rng, cx, cy, size):
    """Side view of a cup: two darker side petals behind a lit front petal."""
    hue = rng.uniform(12, 30)
    height, half_width = size * 1.6, size * 0.55
    base_y = cy + height * 0.45

    def petal(offset, tilt, width_scale, colour):
        t = np.linspace(0, 1, 14)
        across = half_width * width_scale * np.sin(np.pi * t ** 0.7) ** 0.6
        ys = -t * height
        pts = list(zip(offset + across, ys)) + list(zip(offset - across[::-1], ys[::-1]))
        c, s = math.cos(tilt), math.sin(tilt)
        canvas.polygon([(cx + x * c - y * s, base_y + x * s + y * c) for x, y in pts], colour)

    petal(-half_width * 0.5, -0.18, 0.9, _hsv(hue - 4, 0.9, rng.uniform(0.6, 0.72)))
    petal(half_width * 0.5, 0.18, 0.9, _hsv(hue - 4, 0.9, rng.uniform(0.6, 0.72)))
    petal(0, rng.normal(0, 0.04), 1.0, _hsv(hue, rng.uniform(0.85, 0.95), rng.uniform(0.88, 1.0)))
    petal(0, 0, 0.25, _hsv(hue + 10, 0.55, 1.0))  # the light streak down the front petal


def _draw_lavender_spike(canvas, rng, x, top, height, size):
    """One spike: a thin stem topped by whorls of small purple florets."""
    hue = rng.uniform(262, 280)
    lean = rng.uniform(-0.25, 0.25)
    bottom = (x - lean * (height - top), height + 5)
    canvas.line([bottom, (x, top)], _green(rng), max(1.5, size * 0.05))
    whorls = int(rng.integers(8, 14))
    head = size * rng.uniform(3.5, 5.0)
    for w in range(whorls):
        t = w / whorls  # 0 at the tip
        wy = top + t * head + (t ** 2) * head * 0.4  # whorls spread out lower down
        wx = x - lean * (wy - top)
        r = size * (0.2 + 0.18 * math.sin(math.pi * min(1.0, 0.25 + t)))
        for _ in range(int(rng.integers(3, 6))):
            colour = _hsv(hue + rng.normal(0, 4), rng.uniform(0.4, 0.62), rng.uniform(0.5, 0.85))
            canvas.ellipse(wx + rng.uniform(-1, 1) * r, wy + rng.uniform(-0.5, 0.5) * r,
                           r * rng.uniform(0.45, 0.7), r * rng.uniform(0.5, 0.8), colour)


RADIAL_DRAWERS = {"sunflower": _draw_sunflower, "poppy": _draw_poppy,
                  "cornflower": _draw_cornflower, "daisy": _draw_daisy}


# ----------------------------------------------------------------------- backgrounds

def _smooth_noise(rng, w, h, cells) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bicubically."""
    cells_x = max(2, round(cells * w / max(w, h)))
    cells_y = max(2, round(cells * h / max(w, h)))
    grid = rng.random((cells_y, cells_x)).astype(np.float32)
    return np.clip(np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC)), 0, 1)


def _foliage(rng, w, h) -> Image.Image:
    base_hue = rng.uniform(85, 130)
    shade = 0.6 + 0.6 * _smooth_noise(rng, w, h, 5)[..., None]
    image = Image.fromarray(np.uint8(np.clip(np.array(_hsv(base_hue, 0.7, 0.25)) * shade, 0, 255)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(25, 45))):
        length = max(w, h) * rng.uniform(0.12, 0.4)
        angle = rng.uniform(0, 2 * math.pi)
        x, y = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        colour = _hsv(base_hue + rng.normal(0, 12), rng.uniform(0.4, 0.85), rng.uniform(0.2, 0.6))
        draw.polygon(_blade(x, y, angle, 0, length, length * rng.uniform(0.18, 0.32), _leaf), fill=colour)
        rib = _hsv(base_hue, 0.5, 0.15)
        draw.line([(x, y), (x + 0.9 * length * math.cos(angle), y + 0.9 * length * math.sin(angle))], fill=rib)
    # out of focus, as a background behind a close-up flower would be
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 4.0)))


def _sky(rng, w, h) -> Image.Image:
    hue = rng.uniform(198, 214)
    top = np.array(_hsv(hue, rng.uniform(0.55, 0.8), rng.uniform(0.7, 0.9)), np.float32)
    bottom = np.array(_hsv(hue + rng.uniform(-6, 6), rng.uniform(0.15, 0.35), rng.uniform(0.88, 1.0)), np.float32)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None] + rng.uniform(-0.2, 0.2) * np.linspace(
        -1, 1, w, dtype=np.float32)[None, :, None]
    sky = top + (bottom - top) * np.clip(ramp, 0, 1)
    noise = 0.7 * _smooth_noise(rng, w, h, rng.uniform(3, 6)) + 0.3 * _smooth_noise(rng, w, h, 12)
    cover = np.clip((noise - rng.uniform(0.45, 0.7)) / 0.15, 0, 1)[..., None]
    cloud = (0.85 * 255 + 0.15 * top) * (0.75 + 0.25 * noise[..., None])  # shaded, faintly blue-grey
    return Image.fromarray(np.uint8(np.clip(sky * (1 - cover) + cloud * cover, 0, 255)))


def _soil(rng, w, h) -> Image.Image:
    base = np.array(_hsv(rng.uniform(18, 34), rng.uniform(0.35, 0.6), rng.uniform(0.3, 0.45)), np.float32)
    shade = (0.7 + 0.5 * _smooth_noise(rng, w, h, 6) + 0.3 * _smooth_noise(rng, w, h, 20)
             + rng.normal(0, 0.08, (h, w)).astype(np.float32))
    image = Image.fromarray(np.uint8(np.clip(base * shade[..., None], 0, 255)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 25))):  # pebbles
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.3, 1.0) * max(1.0, 0.03 * max(w, h))
        draw.ellipse((x - r, y - r * 0.7, x + r, y + r * 0.7),
                     fill=_hsv(rng.uniform(20, 40), rng.uniform(0.1, 0.3), rng.uniform(0.4, 0.65)))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))


BACKGROUNDS = (_foliage, _sky, _soil)


# ------------------------------------------------------------------------- render

def _render(rng, species: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """One clean photo (uint8 HxWx3) and its foreground mask (bool HxW)."""
    w, h = width * SUPERSAMPLE, height * SUPERSAMPLE
    background = BACKGROUNDS[int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
    canvas = _Canvas(background(rng, w, h))
    short = min(w, h)
    if species == "lavender":
        n_spikes = int(rng.integers(3, 8))
        size = short * rng.uniform(0.09, 0.13)
        for x in np.sort(rng.uniform(0.12, 0.88, n_spikes)) * w:
            _draw_lavender_spike(canvas, rng, x, rng.uniform(0.05, 0.35) * h, h, size)
    else:
        n_flowers = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
        size_range = (0.32, 0.45) if n_flowers == 1 else (0.22, 0.32)
        flowers = [(rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.75) * h, short * rng.uniform(*size_range))
                   for _ in range(n_flowers)]
        for cx, cy, size in sorted(flowers, key=lambda f: f[1]):  # lower flowers are nearer
            if species == "tulip":
                _stem_and_leaves(canvas, rng, cx, cy + size * 0.7, size, h, int(rng.integers(1, 3)))
                _draw_tulip(canvas, rng, cx, cy, size)
            else:
                _stem_and_leaves(canvas, rng, cx, cy, size, h, int(rng.integers(0, 3)))
                RADIAL_DRAWERS[species](canvas, rng, cx, cy, size, rng.uniform(0.65, 1.0))
    photo = canvas.image.reduce(SUPERSAMPLE).filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.9)))
    mask = np.asarray(canvas.mask.reduce(SUPERSAMPLE)) > 127
    # lighting: a smooth brightness ramp in a random direction, then sensor noise
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[-1:1:height * 1j, -1:1:width * 1j].astype(np.float32)
    light = rng.uniform(0.85, 1.1) + rng.uniform(0.05, 0.25) * (xs * math.cos(angle) + ys * math.sin(angle))
    noisy = np.asarray(photo, np.float32) * light[..., None]
    noisy += rng.normal(0, rng.uniform(1.0, 4.0), noisy.shape).astype(np.float32)
    return np.uint8(np.clip(noisy + 0.5, 0, 255)), mask


def _random_size(rng, cfg: GardenConfig) -> tuple[int, int]:
    height = int(rng.integers(cfg.min_size, cfg.max_size + 1))
    width = int(np.clip(round(height * rng.uniform(0.85, 1.18)), cfg.min_size, cfg.max_size))
    return width, height


def _clean_image(cfg: GardenConfig, index: int) -> tuple[str, np.ndarray, np.ndarray]:
    """Species, pixels and mask of clean file `index`; a pure function of (seed, index)."""
    rng = np.random.default_rng([cfg.seed, IMAGE_STREAM, index])
    species = SPECIES[int(rng.integers(len(SPECIES)))]
    width, height = _random_size(rng, cfg)
    pixels, mask = _render(rng, species, width, height)
    return species, pixels, mask


# ------------------------------------------------------------------------ encoding

def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    return _encode(image, "JPEG", quality=quality)


def _refuses_to_load(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:
        return True
    return False


@lru_cache(maxsize=1)
def _bomb_png() -> bytes:
    """A valid 1-bit PNG declaring BOMB_SIDE^2 pixels, ~110 kB thanks to deflate."""
    row = bytes(1 + (BOMB_SIDE + 7) // 8)  # filter byte + one black row
    deflate = zlib.compressobj(9)
    data = b"".join(deflate.compress(row) for _ in range(BOMB_SIDE)) + deflate.flush()

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@lru_cache(maxsize=1)
def _skimage_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """The bundled colour photographs that load here (never triggers a download)."""
    import skimage.data

    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            pixels = np.asarray(getattr(skimage.data, name)())
        except Exception:  # missing from this install: skip rather than fetch
            continue
        if pixels.ndim == 3 and pixels.shape[2] >= 3:
            photos.append((name, np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)))
    if not photos:
        raise RuntimeError("garden: no bundled scikit-image colour photo could be loaded")
    return tuple(photos)


_ERROR_PAGES = (
    (404, "Not Found", "The requested URL was not found on this server."),
    (403, "Forbidden", "You don't have permission to access this resource."),
    (503, "Service Unavailable", "The server is temporarily busy. Please try again later."),
    (429, "Too Many Requests", "Rate limit exceeded. Slow down."),
)


def _error_page(rng) -> tuple[bytes, str]:
    code, title, text = _ERROR_PAGES[int(rng.integers(len(_ERROR_PAGES)))]
    html = (f"<!DOCTYPE html>\n<html><head><title>{code} {title}</title></head>\n"
            f"<body><h1>{title}</h1><p>{text}</p><hr><address>nginx</address></body></html>\n")
    return html.encode(), f"html {code}"


def _sepia(rgb: np.ndarray) -> np.ndarray:
    matrix = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
    return np.uint8(np.clip(rgb.astype(np.float32) @ matrix.T, 0, 255))


def _tint(rgb: np.ndarray, rng) -> tuple[np.ndarray, str]:
    """A strong colour filter: luminance times one colour, with a trace of the original."""
    hue = rng.uniform(0, 360)
    colour = np.array(_hsv(hue, rng.uniform(0.55, 0.85), 1.0), np.float32) / 255
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    toned = luma[..., None] * colour * (1.0 / max(colour @ np.array([0.299, 0.587, 0.114]), 0.3))
    strength = rng.uniform(0.93, 1.0)
    out = strength * toned + (1 - strength) * rgb
    return np.uint8(np.clip(out, 0, 255)), f"hue={hue:.0f}"


def _irrelevant(rng, cfg: GardenConfig) -> tuple[bytes, str]:
    name, photo = _skimage_photos()[int(rng.integers(len(_skimage_photos())))]
    width, height = _random_size(rng, cfg)
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.25, 0.9) * min(ph / height, pw / width)
    ch, cw = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = photo[top:top + ch, left:left + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.1:
        crop = crop[::-1]
    image = Image.fromarray(np.ascontiguousarray(crop)).resize((width, height), Image.BICUBIC)
    return _jpeg(image), name


def _derived(kind: str, rng, original: bytes, mask_of_original) -> tuple[bytes, str, str]:
    """(file bytes, extension, detail) of a defect made from a clean original's file."""
    with Image.open(io.BytesIO(original)) as opened:
        image = opened.convert("RGB")
    rgb = np.asarray(image)
    if kind == "grayscale":
        return _jpeg(image.convert("L").convert("RGB")), "jpg", ""
    if kind == "sepia":
        return _jpeg(Image.fromarray(_sepia(rgb))), "jpg", ""
    if kind == "tinted":
        toned, detail = _tint(rgb, rng)
        return _jpeg(Image.fromarray(toned)), "jpg", detail
    if kind == "exact_duplicate":
        return original, "jpg", ""
    if kind == "near_duplicate":
        variant = ("resized", "reencoded", "cropped")[int(rng.integers(3))]
        if variant == "resized":
            factor = rng.uniform(0.6, 0.9)
            size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
            return _jpeg(image.resize(size, Image.BICUBIC)), "jpg", f"resized x{factor:.2f}"
        if variant == "reencoded":
            quality = int(rng.integers(30, 51))
            return _jpeg(image, quality), "jpg", f"reencoded q{quality}"
        keep = rng.uniform(0.8, 0.95)
        cw, ch = max(1, round(image.width * keep)), max(1, round(image.height * keep))
        left, top = int(rng.integers(0, image.width - cw + 1)), int(rng.integers(0, image.height - ch + 1))
        return _jpeg(image.crop((left, top, left + cw, top + ch))), "jpg", f"cropped {keep:.2f}"
    if kind == "tiny":
        longest = min(int(rng.integers(16, 41)), max(image.size))  # never upscale
        scale = longest / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return _jpeg(image.resize(size, Image.BOX)), "jpg", f"{size[0]}x{size[1]}"
    if kind == "truncated":
        for _ in range(20):  # keep cutting until Pillow really refuses it
            keep = rng.uniform(0.4, 0.7)
            data = original[: int(len(original) * keep)]
            if _refuses_to_load(data):
                return data, "jpg", f"kept {keep:.2f}"
        raise RuntimeError("garden: could not make a truncated JPEG that fails to load")
    if kind == "corrupt":
        for _ in range(20):  # garble the header (quant/huffman tables, frame) after SOI
            span = int(rng.integers(40, 200))
            garbage = rng.integers(0, 256, span, dtype=np.uint8).tobytes()
            data = original[:2] + garbage + original[2 + span:]
            if _refuses_to_load(data):
                return data, "jpg", f"garbled {span} header bytes"
        raise RuntimeError("garden: could not make a corrupt JPEG that fails to load")
    if kind == "png_alpha":
        alpha = np.where(mask_of_original(), 255, int(rng.integers(0, 96))).astype(np.uint8)
        rgba = Image.fromarray(np.dstack([rgb, alpha]))
        return _encode(rgba, "PNG"), "png", "transparent background"
    if kind == "cmyk":
        return _jpeg(image.convert("CMYK")), "jpg", ""
    if kind == "png16_gray":
        gray = np.asarray(image.convert("L")).astype(np.uint16) * 257  # full 16-bit range
        return _encode(Image.fromarray(gray), "PNG"), "png", "16-bit gray"
    if kind == "palette":
        paletted = image.quantize(colors=int(rng.integers(32, 257)))
        fmt = ("PNG", "GIF")[int(rng.integers(2))]
        return _encode(paletted, fmt), fmt.lower(), fmt.lower()
    raise ValueError(f"not a derived defect: {kind}")


# ------------------------------------------------------------------------ generate

def _check(cfg: GardenConfig) -> None:
    if cfg.n_images < 1:
        raise ValueError(f"garden: n_images must be >= 1, got {cfg.n_images}")
    if cfg.seed < 0:
        raise ValueError(f"garden: seed must be >= 0, got {cfg.seed}")
    if not 8 <= cfg.min_size <= cfg.max_size:
        raise ValueError(f"garden: need 8 <= min_size <= max_size, got {cfg.min_size}, {cfg.max_size}")
    if not 0.0 <= cfg.defect_rate <= 1.0:
        raise ValueError(f"garden: defect_rate must be in [0, 1], got {cfg.defect_rate}")


class _CleanFiles:
    """The clean files written so far, ascending, each with its species: 9 bytes a file
    (a dict of index -> (path, species) was ~0.2 kB, and grew with the garden)."""

    def __init__(self) -> None:
        self.indices = array("q")
        self.species = bytearray()  # positions in SPECIES

    def add(self, index: int, species: str) -> None:
        self.indices.append(index)
        self.species.append(SPECIES.index(species))

    def __len__(self) -> int:
        return len(self.indices)

    def pick(self, k: int) -> tuple[int, str, str]:
        """The k-th clean file: (index, path, species); clean files are always JPEG."""
        index = self.indices[k]
        return index, _name(index, "jpg"), SPECIES[self.species[k]]


def _name(index: int, ext: str) -> str:
    return f"img_{index:05d}.{ext}"


def _make_file(cfg: GardenConfig, index: int, kind: str, clean_files: _CleanFiles, out_dir: Path) -> tuple[bytes, dict]:
    """Bytes and truth record of file `index`; copies draw on the earlier clean_files."""
    record = {"path": "", "label": "", "defect": kind, "defect_detail": "", "defect_of": ""}
    ext = "jpg"
    if kind == "none":
        species, pixels, _ = _clean_image(cfg, index)
        data, record["label"] = _jpeg(Image.fromarray(pixels)), species
    else:
        rng = np.random.default_rng([cfg.seed, IMAGE_STREAM, index])
        if kind == "zero_byte":
            data = b""
        elif kind == "not_image":
            data, record["defect_detail"] = _error_page(rng)
        elif kind == "bomb":
            data, ext, record["defect_detail"] = _bomb_png(), "png", f"{BOMB_SIDE}x{BOMB_SIDE}"
        elif kind == "irrelevant":
            data, record["defect_detail"] = _irrelevant(rng, cfg)
            record["label"] = "irrelevant"
        else:
            # any earlier clean file: a shorter run has it too, so prefixes stay stable
            source, path, species = clean_files.pick(int(rng.integers(len(clean_files))))
            original = (out_dir / path).read_bytes()  # from disk: memory stays flat as n grows
            data, ext, record["defect_detail"] = _derived(kind, rng, original, lambda: _clean_image(cfg, source)[2])
            record["label"], record["defect_of"] = species, path
    record["path"] = _name(index, ext)
    return data, record


def generate(out_dir: Path, cfg: GardenConfig, progress: bool = True) -> list[dict]:
    """Write the garden into out_dir (created; existing *files written by a previous run are overwritten*) and return one record per file written, sorted by `path`."""
    return sorted(iter_generate(out_dir, cfg, progress), key=lambda r: r["path"])


def iter_generate(out_dir: Path, cfg: GardenConfig, progress: bool = True) -> Iterator[dict]:
    """generate's records one at a time, each once its file is written, in index order
    (path order up to 100,000 files), writing the truth CSV as they go: the download
    holds no record of every file. The files and the truth are complete when the
    iteration ends."""
    _check(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = _schedule(cfg)
    clean_files = _CleanFiles()
    exts = bytearray()  # each written file's extension, a position in _EXTS
    with open(out_dir / TRUTH_FILE, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=TRUTH_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for index in tqdm(range(cfg.n_images), desc="garden", unit="img", disable=not progress):
            data, record = _make_file(cfg, index, kinds[index], clean_files, out_dir)
            if record["defect"] == "none":
                clean_files.add(index, record["label"])
            (out_dir / record["path"]).write_bytes(data)
            exts.append(_EXTS.index(record["path"].rsplit(".", 1)[1]))
            writer.writerow(record)
            yield record

    # files of a previous, larger run would otherwise linger without a truth row
    for stale in out_dir.iterdir():
        m = _NAME_RE.fullmatch(stale.name)
        if m and stale.is_file():
            index = int(m.group(1))
            if index >= len(exts) or stale.name != _name(index, _EXTS[exts[index]]):
                stale.unlink()
