"""Safe decoding of every awkward input a scrape brings, made in the test."""
import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from colorize.common.images import decode, fit_square

MAX = 10_000_000


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    base = np.zeros((60, 80, 3), np.uint8)
    base[..., 0] = np.linspace(0, 255, 80)[None]
    base[..., 1] = np.linspace(0, 255, 60)[:, None]
    base[..., 2] = 128
    return Image.fromarray(np.clip(base + rng.integers(0, 8, base.shape), 0, 255).astype(np.uint8))


def test_plain_jpeg(photo):
    d = decode(encode(photo, "JPEG", quality=95), MAX)
    assert d.status == "ok" and d.pixels.shape == (60, 80, 3) and (d.width, d.height) == (80, 60)
    assert np.abs(d.pixels.astype(int) - np.asarray(photo)).mean() < 3


@pytest.mark.parametrize(
    "data, status",
    [
        (b"", "empty"),
        (b"<html><body>403 Forbidden</body></html>", "not_image"),
        (b"\xff\xd8\xff\xe0garbage that is not a jpeg at all", "corrupt"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt"),
    ],
)
def test_unusable_bytes(data, status):
    d = decode(data, MAX)
    assert d.status == status and d.pixels is None and d.error and "\n" not in d.error


def test_truncated_jpeg(photo):
    data = encode(photo, "JPEG", quality=95)
    d = decode(data[: len(data) // 2], MAX)
    assert d.status == "truncated", d.error


def test_bomb_refused_before_decoding():
    im = Image.new("1", (5000, 5000))
    d = decode(encode(im, "PNG"), max_pixels=1_000_000)
    assert d.status == "too_large" and "max_pixels" in d.error and (d.width, d.height) == (5000, 5000)


def test_cmyk(photo):
    d = decode(encode(photo.convert("CMYK"), "JPEG", quality=95), MAX)
    assert d.status == "ok" and d.mode == "CMYK" and d.pixels.shape == (60, 80, 3)
    assert np.abs(d.pixels.astype(int) - np.asarray(photo)).mean() < 8


def test_sixteen_bit_gray_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    d = decode(encode(Image.fromarray(ramp), "PNG"), MAX)
    assert d.status == "ok" and d.mode.startswith("I")
    gray = d.pixels[..., 0].astype(int)
    assert gray.min() <= 1 and gray.max() >= 254  # the full range survives, not a white sheet
    assert np.all(np.diff(gray.ravel()) >= 0)


def test_alpha_composited_over_white(photo):
    rgba = photo.convert("RGBA")
    alpha = np.full((60, 80), 255, np.uint8)
    alpha[:, :40] = 0
    rgba.putalpha(Image.fromarray(alpha))
    d = decode(encode(rgba, "PNG"), MAX)
    assert d.status == "ok" and d.mode == "RGBA"
    assert (d.pixels[:, :40] == 255).all()
    assert np.array_equal(d.pixels[:, 40:], np.asarray(photo)[:, 40:])


def test_palette_and_gray_modes(photo):
    for im in (photo.convert("P"), photo.convert("L"), photo.convert("1")):
        d = decode(encode(im, "PNG"), MAX)
        assert d.status == "ok" and d.pixels.shape == (60, 80, 3), im.mode


def test_exif_orientation_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    d = decode(encode(photo, "JPEG", quality=95, exif=exif), MAX)
    assert d.status == "ok" and d.pixels.shape == (80, 60, 3) and (d.width, d.height) == (60, 80)
    assert "exif-oriented" in d.notes


def test_icc_profile_converted_to_srgb(photo):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    d = decode(encode(photo, "PNG", icc_profile=icc), MAX)
    assert d.status == "ok" and "icc->sRGB" in d.notes
    assert np.abs(d.pixels.astype(int) - np.asarray(photo)).max() <= 2


def test_draft_decodes_large_jpeg_small_but_not_below_target():
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8))
    d = decode(encode(big, "JPEG", quality=80), MAX, draft_size=64)
    assert d.status == "ok" and (d.width, d.height) == (2000, 1500)
    assert min(d.pixels.shape[:2]) >= 64 and d.pixels.shape[0] < 1500


def test_fit_square():
    out = fit_square(np.zeros((60, 80, 3), np.uint8), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_pillow_global_limit_untouched_and_huge_bomb_refused():
    # Importing the project must not switch off Pillow's own guard for everyone else.
    assert Image.MAX_IMAGE_PIXELS is not None
    im = Image.new("1", (20000, 20000))  # 400 Mpx: beyond Pillow's own 2x limit
    d = decode(encode(im, "PNG"), max_pixels=10**12)
    assert d.status == "too_large" and "\n" not in d.error
