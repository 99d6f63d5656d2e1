"""Safe image decoding: any file in, an sRGB uint8 array or a named reason out.

Real scraped data holds zero-byte files, HTML error pages saved as .jpg, truncated
downloads, CMYK and 16-bit files, images with alpha or an ICC profile, and the odd
decompression bomb. `decode()` never raises for any of these: it returns a `Decoded`
with `status == "ok"` and the pixels, or with a status that names the reason.

A folder can also hold things that are not files to read at all: a FIFO (opening it
blocks until some writer appears), a socket, a device (/dev/zero never ends), a dangling
or looping symlink. `read_file()` refuses those without opening them, with a status of
FILE_STATUSES and a reason.
"""
from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

# Pillow's own bomb guard (an error at twice Image.MAX_IMAGE_PIXELS, at open time) stays
# in force; on top of it we check the declared size against ingest.max_pixels before any
# pixel is decoded, so the limit is the project's param and the reason is recorded.

STATUSES = ("ok", "empty", "not_image", "truncated", "corrupt", "too_large")
# Files never decoded: read_file's reasons (ingest adds download_failed for sources).
FILE_STATUSES = ("unreadable_file", "not_regular_file", "broken_link")

_SRGB_PROFILE = ImageCms.createProfile("sRGB")
_ORIENTATION = 0x0112  # EXIF tag
# Leading bytes of the common formats: a file that starts like one but will not parse
# is a corrupt image, not a non-image.
_IMAGE_MAGIC = (b"\xff\xd8", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


@dataclass
class Decoded:
    status: str  # one of STATUSES
    error: str = ""  # one line, for the manifest
    width: int = 0  # full size as a viewer shows it (after EXIF rotation)
    height: int = 0
    mode: str = ""  # Pillow mode of the file, e.g. RGB, CMYK, I;16, P
    format: str = ""  # JPEG, PNG, ...
    pixels: np.ndarray | None = None  # (H, W, 3) uint8 sRGB, EXIF-oriented
    notes: str = ""  # what conversion was applied, e.g. "alpha over white; icc->sRGB"


class NotRead(Exception):
    """A path that read_file does not (or cannot) read: `status` of FILE_STATUSES, `reason` one line."""

    def __init__(self, status: str, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file (through symlinks). Anything else raises NotRead
    without being opened; O_NONBLOCK and a check of the opened file cover a file swapped
    for a FIFO between the check and the open."""
    check_regular_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise NotRead("unreadable_file", f"{type(e).__name__}: {e}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise NotRead("not_regular_file", f"{_kind(mode)}, not a regular file: not read")
        try:
            return f.read()
        except OSError as e:
            raise NotRead("unreadable_file", f"{type(e).__name__}: {e}") from None


def check_regular_file(path: str | os.PathLike) -> os.stat_result:
    """stat of `path` when it is (a link to) a regular file; otherwise NotRead naming why."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRead("broken_link", "symbolic link loop") from None
        if os.path.islink(path):
            raise NotRead("broken_link", f"dangling symbolic link to {os.readlink(path)!r}") from None
        raise NotRead("unreadable_file", f"{type(e).__name__}: {e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "symbolic link to a folder (not followed)" if os.path.islink(path) else _kind(st.st_mode)
        raise NotRead("not_regular_file", f"{kind}, not a regular file: not read")
    return st


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder")]
    return next((name for test, name in kinds if test(mode)), "special file")


def decode(data: bytes, max_pixels: int, draft_size: int | None = None) -> Decoded:
    """Decode `data` to sRGB uint8.

    `draft_size` lets JPEG decode at a reduced scale (DCT scaling) when the caller will
    shrink the image to about that size anyway; it never goes below that size.
    """
    with warnings.catch_warnings():
        # EXIF/ICC chatter ("Corrupt EXIF data") and Pillow's bomb warning: decode's own
        # checks decide, and a worker printing one line per odd file helps nobody.
        warnings.simplefilter("ignore")
        return _decode(data, max_pixels, draft_size)


def _decode(data: bytes, max_pixels: int, draft_size: int | None) -> Decoded:
    if not data:
        return Decoded("empty", "zero-byte file")
    try:
        im = Image.open(io.BytesIO(data))
        frames = _frames_note(im)
    except Image.DecompressionBombError as e:
        return Decoded("too_large", _one_line(e))
    except UnidentifiedImageError:
        if data.startswith(_IMAGE_MAGIC):
            return Decoded("corrupt", "starts like an image but cannot be parsed")
        return Decoded("not_image", "not a recognised image format")
    except Exception as e:  # noqa: BLE001 - any parser failure is a corrupt file
        return Decoded("corrupt", _one_line(e))
    out = Decoded("ok", width=im.width, height=im.height, mode=im.mode, format=im.format or "")
    if im.width * im.height > max_pixels:
        out.status = "too_large"
        out.error = f"{im.width}x{im.height} exceeds ingest.max_pixels={max_pixels} (decompression-bomb guard)"
        return out
    try:
        if im.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
            out.width, out.height = im.height, im.width  # rotated 90°: report what a viewer shows
    except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image
        pass
    try:
        if draft_size and im.format == "JPEG" and im.mode in ("RGB", "L"):
            im.draft(im.mode, (draft_size, draft_size))
        im.load()
        rgb, notes = _to_srgb(im)
    except OSError as e:
        msg = _one_line(e)
        out.status = "truncated" if "truncated" in msg.lower() else "corrupt"
        out.error = msg
        return out
    except Exception as e:  # noqa: BLE001 - a decoder bug on a hostile file is still a reject
        out.status, out.error = "corrupt", _one_line(e)
        return out
    out.pixels = np.asarray(rgb, dtype=np.uint8)
    out.notes = "; ".join(n for n in (frames, notes) if n)
    return out


def _frames_note(im: Image.Image) -> str:
    """'animated: first of N frames' for an animation or multi-page file (only the first
    frame is used), else ''. `n_frames` parses frame headers only, decoding nothing:
    seeking to a frame would decode the ones before it (and a GIF frame may enlarge the
    canvas past the size checked against max_pixels)."""
    try:
        n = getattr(im, "n_frames", 1)
    except Exception:  # noqa: BLE001 - a damaged later frame: the first may still be fine
        im.seek(0)
        return "animated: first frame (later frames unreadable)"
    return f"animated: first of {n} frames" if n > 1 else ""


def _to_srgb(im: Image.Image) -> tuple[Image.Image, str]:
    notes = []
    icc = im.info.get("icc_profile")
    if im.getexif().get(_ORIENTATION, 1) != 1:
        im = ImageOps.exif_transpose(im)
        notes.append("exif-oriented")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit depth gray: scale to 8 bits by the range the mode can hold.
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 or im.mode.startswith("I;16") else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        notes.append("16-bit->8-bit")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        notes.append("palette")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Composite over white: transparent regions of product shots and logos are
        # meant to be seen on a light page.
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("RGB")
        notes.append("alpha over white")
    if icc and im.mode in ("RGB", "CMYK"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            im = ImageCms.profileToProfile(im, src, _SRGB_PROFILE, outputMode="RGB")
            notes.append("icc->sRGB")
        except Exception:  # noqa: BLE001 - a broken profile: fall back to a plain convert
            notes.append("icc ignored")
    if im.mode != "RGB":
        if im.mode == "CMYK":
            notes.append("cmyk")
        im = im.convert("RGB")
    return im, "; ".join(notes)


def fit_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop the short side and resize to size x size (bicubic, antialiased)."""
    im = Image.fromarray(pixels)
    return np.asarray(ImageOps.fit(im, (size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def _one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ").strip()
    return text[:300]
