"""colorize/cli/colorize.py: full-resolution colorization of files and folders.

A tiny random-init U-Net checkpoint is made here and saved exactly as the training engine
saves one (colorize/training/engine.py, `state_of`). The CLI runs in a subprocess where exit status and messages
matter, and in-process elsewhere.

The L guarantee: the output keeps the input's L up to 8-bit rounding. Rounding each
channel by at most 0.5/255 moves L by at most ROUNDING_L: the largest
max(L(c + d) - L(c), L(c) - L(c - d)), d = 0.5/255 on all three channels (L rises with
every channel, so a corner of the rounding box is the worst case), over all 256**3
8-bit colours, computed once in float64 with colour.rgb_to_lab: 0.2606, at (0, 29, 0).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms

from colorize.cli import colorize as C
from colorize.common.colour import lab_to_uint8, rgb_to_lab, uint8_to_lab
from colorize.common.errors import UserError
from colorize.common.images import decode

ROOT = Path(__file__).resolve().parents[1]
FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers-128"
ROUNDING_L = 0.2606 + 0.005  # see the module docstring; + float32 and gamut-tolerance slack
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As the CLI (--threads 1): two threads on two shared cores are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _params(width: int = 4) -> dict:
    from colorize.common.params import load_params, validate

    params = load_params(ROOT / "params.yaml")
    params["train"]["model"] = "unet"
    params["train"]["width"] = width
    return validate(params)


def save_like_train(path: Path, params: dict, **extra) -> Path:
    """A random-init model of params['train'], saved as the training engine saves one."""
    from colorize.training import checkpoint
    from colorize.training.engine import state_of, warmup_cosine
    from colorize.training.models import build_model

    cfg = params["train"]
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False)
    with torch.no_grad():  # a visible colour cast, so outputs are not near-gray
        model.head.bias.copy_(torch.tensor([0.15, 0.25]))
    optimizers = model.configure_optimizers(cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizers["model"], warmup_cosine(cfg["warmup_epochs"], cfg["epochs"]))
    checkpoint.save(path, {**state_of(model, optimizers, sched, 0, params), **extra})
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_like_train(tmp_path_factory.mktemp("ckpt") / "tiny.pt", _params())


def cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "colorize.cli.colorize", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus noise: a small photo-like RGB image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), np.full((h, w), 90.0)], -1)
    return np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


def decoded_L(path: Path) -> np.ndarray:
    """L of a file as the pipeline sees it (EXIF-oriented, converted to sRGB)."""
    d = decode(path.read_bytes(), C.MAX_PIXELS)
    assert d.status == "ok", (path, d.error)
    return uint8_to_lab(np.array(d.pixels))[..., 0].numpy()


def assert_L_kept(src: Path, out: Path) -> None:
    a, b = decoded_L(src), decoded_L(out)
    assert a.shape == b.shape, (src, a.shape, b.shape)
    assert np.abs(a - b).max() <= ROUNDING_L, (src, float(np.abs(a - b).max()))


# ------------------------------------------------------------------ Lab math, in-process

def test_luminance_matches_colour_module():
    px = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ref = rgb_to_lab(torch.from_numpy(px).float() / 255)[..., 0]
    assert (C.luminance(px) - ref).abs().max() < 1e-3


def test_compose_is_colour_module_inside_gamut():
    """Lab of 8-bit colours is in gamut: compose_band gives the colours back, as colour.py does."""
    px = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    lab = uint8_to_lab(px)
    out = C.compose_band(lab[..., 0], lab[..., 1:])
    np.testing.assert_array_equal(out, lab_to_uint8(lab))
    assert np.abs(out.astype(int) - px).max() <= 1


def test_gamut_fit_keeps_L_and_hue():
    """Out-of-gamut L + ab: chroma is reduced (hue kept) instead of clipping RGB."""
    g = torch.Generator().manual_seed(0)
    L = torch.rand(200, 200, generator=g) * 100
    ab = (torch.rand(200, 200, 2, generator=g) - 0.5) * 240  # mostly far outside sRGB
    out = C.compose_band(L, ab)
    back = uint8_to_lab(out)
    assert (back[..., 0] - L).abs().max() <= ROUNDING_L
    clipped = lab_to_uint8(torch.cat([L[..., None], ab], -1))  # what plain clipping does
    assert (uint8_to_lab(clipped)[..., 0] - L).abs().max() > 5
    chroma = back[..., 1:].norm(dim=-1)
    vivid = chroma > 10  # hue is only defined (and only survives rounding) with some chroma
    cos = (back[..., 1:] * ab).sum(-1) / (chroma * ab.norm(dim=-1))
    assert cos[vivid].min() > 0.95


def test_banded_upsampling_is_one_bilinear_resize(ckpt, monkeypatch):
    """Row bands (vertical once, then per band horizontal) = one full bilinear resize."""
    model, params = C.load_model(ckpt)
    px = photo(45, 70)
    whole, _ = C.colorize_pixels(px, model, 64, 8)
    monkeypatch.setattr(C, "BAND_PIXELS", 70 * 4)  # 4 rows per band, 12 bands
    banded, compare = C.colorize_pixels(px, model, 64, 8, side_by_side=True)
    np.testing.assert_array_equal(banded, whole)
    L = C.luminance(px)
    ab = C.predict_small_ab(model, L, C.render_shape(45, 70, 64, 8))
    direct = C.compose_band(L, F.interpolate(ab, size=(45, 70), mode="bilinear")[0].permute(1, 2, 0))
    assert np.abs(direct.astype(int) - whole).max() <= 1
    assert compare.shape == (45, 140, 3)
    np.testing.assert_array_equal(compare[:, 70:], whole)
    assert (compare[:, :70, 0] == compare[:, :70, 1]).all()  # left half is gray


@pytest.mark.parametrize("hw, want", [((4000, 6000), (64, 96)), ((6000, 4000), (96, 64)), ((50, 50), (64, 64)),
                                      ((10, 1000), (64, 1024)), ((128, 130), (64, 64))])
def test_render_shape_keeps_aspect(hw, want):
    assert C.render_shape(*hw, 64, 8) == want


# ------------------------------------------------------------------ the CLI on a mixed batch

def _write_inputs(d: Path) -> dict[str, tuple[int, int]]:
    """Every awkward kind of input; returns name -> upright (width, height)."""
    sizes = {}
    rgb = Image.fromarray(photo(40, 72))  # non-square
    rgb.save(d / "wide.png")
    sizes["wide.png"] = (72, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64x40, shown rotated 90° clockwise: 40x64
    Image.fromarray(photo(40, 64, 2)).save(d / "rotated.jpg", quality=95, exif=exif.tobytes())
    sizes["rotated.jpg"] = (40, 64)
    Image.fromarray(photo(48, 48, 3)).save(d / "icc.png", icc_profile=SRGB_ICC)
    sizes["icc.png"] = (48, 48)
    gray16 = (np.linspace(0, 65535, 50 * 30).reshape(30, 50)).astype(np.uint16)
    Image.fromarray(gray16).save(d / "gray16.png")
    assert Image.open(d / "gray16.png").mode == "I;16"
    sizes["gray16.png"] = (50, 30)
    Image.fromarray(photo(32, 40, 4)).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    sizes["cmyk.jpg"] = (40, 32)
    rgba = np.dstack([photo(30, 30, 5), np.tile(np.linspace(0, 255, 30, dtype=np.uint8), (30, 1))])
    Image.fromarray(rgba, "RGBA").save(d / "alpha.png")
    sizes["alpha.png"] = (30, 30)
    Image.fromarray(photo(36, 28, 6)).convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(d / "palette.png")
    sizes["palette.png"] = (28, 36)
    Image.fromarray(photo(24, 40, 7)).convert("L").save(d / "gray.jpg", quality=90)
    sizes["gray.jpg"] = (40, 24)
    Image.fromarray(photo(26, 26, 8)).convert("LA").save(d / "gray_alpha.png")
    sizes["gray_alpha.png"] = (26, 26)
    (d / "sub").mkdir()
    Image.fromarray(photo(20, 30, 9)).save(d / "sub" / "nested.jpg", quality=90)
    sizes["sub/nested.jpg"] = (30, 20)
    # bad files, and a hidden one that is not an input at all
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    (d / "notes.txt").write_text("shopping list\n")
    Image.fromarray(photo(10, 10)).save(d / ".hidden.png")
    return sizes


@pytest.fixture(scope="module")
def batch(tmp_path_factory, ckpt):
    d = tmp_path_factory.mktemp("batch")
    src, out = d / "in", d / "out"
    src.mkdir()
    sizes = _write_inputs(src)
    missing = d / "no_such.jpg"
    proc = cli(src, missing, "-o", out, "--model", ckpt, "--side-by-side")
    return src, out, sizes, proc, missing


def test_batch_counts_messages_and_exit_status(batch):
    src, out, sizes, proc, missing = batch
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr  # one line per bad input, nothing else (no traceback, no bar off a TTY)
    by_path = {line.split(": ")[1]: line for line in lines}
    assert set(by_path) == {str(src / "broken.jpg"), str(src / "notes.txt"), str(missing)}
    assert all(line.startswith("colorize: ") for line in lines)
    assert "corrupt" in by_path[str(src / "broken.jpg")]
    assert "not a recognised image" in by_path[str(src / "notes.txt")]
    assert proc.stdout.strip().splitlines()[-1] == f"colorize: {len(sizes)} written, 3 failed, 0 skipped"
    assert not (out / ".hidden.png").exists() and not (out / "broken.png").exists()


def test_batch_full_resolution_upright_and_L_kept(batch):
    src, out, sizes, _, _ = batch
    for name, (w, h) in sizes.items():
        result = out / Path(name).with_suffix(".png")
        with Image.open(result) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (w, h), (name, im.size)
            assert im.getexif().get(0x0112, 1) == 1  # upright pixels, no rotation left to apply
        with Image.open(out / Path(name).with_name(Path(name).stem + "_compare.png")) as im:
            assert im.size == (2 * w, h)
        assert_L_kept(src / name, result)
    # the colour is really new: a gray input comes out coloured
    colour = np.asarray(Image.open(out / "gray.png")).astype(int)
    assert np.abs(colour[..., 0] - colour[..., 2]).mean() > 3


def test_batch_keeps_icc_profile(batch):
    _, out, _, _, _ = batch
    with Image.open(out / "icc.png") as im:
        assert im.info.get("icc_profile") == SRGB_ICC
    with Image.open(out / "wide.png") as im:
        assert "icc_profile" not in im.info  # none in, none out (untagged = sRGB)


def test_rerun_skips_existing_outputs_unless_overwrite(tmp_path, ckpt, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray(photo(20, 24)).save(src / "a.png")
    Image.fromarray(photo(20, 24, 1)).save(src / "b.jpg")
    assert C.colorize([src], out, ckpt) == C.Summary(written=2)
    before = (out / "a.png").stat().st_mtime_ns
    assert C.colorize([src], out, ckpt) == C.Summary(skipped=2)
    err = capsys.readouterr().err
    assert f"colorize: {src / 'a.png'}: skipped: {out / 'a.png'} exists (use --overwrite" in err
    assert (out / "a.png").stat().st_mtime_ns == before
    assert C.colorize([src], out, ckpt, overwrite=True) == C.Summary(written=2)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_same_stem_inputs_keep_their_suffix(tmp_path, ckpt):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo(16, 16)).save(src / "a.png")
    Image.fromarray(photo(16, 16, 1)).save(src / "a.jpg")
    Image.fromarray(photo(16, 16, 2)).save(src / "b.jpg")
    assert C.colorize([src], tmp_path / "out", ckpt) == C.Summary(written=3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg.png", "a.png.png", "b.png"]


# ------------------------------------------------------------------ never over an input

def test_outdir_that_is_an_input_folder_is_refused(tmp_path, ckpt):
    Image.fromarray(photo(16, 20)).save(tmp_path / "x.png")
    Image.fromarray(photo(16, 20, 1)).save(tmp_path / "y.jpg")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = cli(tmp_path, "-o", tmp_path, "--model", ckpt, "--overwrite")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: -o {tmp_path} is an input folder: outputs would mix with the inputs "
                                   "(and be read as inputs next time); choose another output folder")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written at all


def test_output_onto_an_input_file_is_refused(tmp_path, ckpt):
    """Input files named one by one, OUTDIR their own folder: x.png would be written over x.png."""
    Image.fromarray(photo(16, 20)).save(tmp_path / "x.png")
    Image.fromarray(photo(16, 20, 1)).save(tmp_path / "y.jpg")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(UserError, match=r"would write .*x\.png over the input .*x\.png"):
        C.colorize([tmp_path / "y.jpg", tmp_path / "x.png"], tmp_path, ckpt, overwrite=True)
    elsewhere = tmp_path / "out"
    elsewhere.mkdir()
    (elsewhere / "x.png").symlink_to(tmp_path / "x.png")  # writing there would go through to the input
    with pytest.raises(UserError, match="over the input"):
        C.colorize([tmp_path / "x.png"], elsewhere, ckpt, overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    # a new name beside the inputs is fine: y.jpg -> y.png, the input untouched
    assert C.colorize([tmp_path / "y.jpg"], tmp_path, ckpt) == C.Summary(written=1)
    assert (tmp_path / "y.jpg").read_bytes() == before["y.jpg"] and (tmp_path / "y.png").exists()


def test_outdir_inside_input_folder_is_not_rescanned(tmp_path, ckpt):
    Image.fromarray(photo(16, 20)).save(tmp_path / "x.png")
    out = tmp_path / "colour"
    assert C.colorize([tmp_path], out, ckpt) == C.Summary(written=1)
    assert C.colorize([tmp_path], out, ckpt) == C.Summary(skipped=1)  # colour/x.png is not an input
    assert sorted(p.name for p in out.iterdir()) == ["x.png"]


# ------------------------------------------------------------------ checkpoints are data

class Payload:
    """Runs a shell command when unpickled by a full (unsafe) pickle load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_in_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = save_like_train(tmp_path / "evil.pt", _params(), extra=Payload(marker))
    Image.fromarray(photo(16, 16)).save(tmp_path / "a.png")
    proc = cli(tmp_path / "a.png", "-o", tmp_path / "out", "--model", evil)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {evil}: refused: not a plain weights checkpoint")
    assert "system" in lines[0]  # names the global it refused
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_checkpoint_params_are_validated(tmp_path):
    params = _params()
    bad = save_like_train(tmp_path / "bad.pt", params)
    ckpt = torch.load(bad, weights_only=True)
    ckpt["args"]["train"]["width"] = -3
    torch.save(ckpt, bad)
    with pytest.raises(UserError, match=r"checkpoint params: train.width: must be >= 1"):
        C.load_model(bad)
    with pytest.raises(UserError, match="checkpoint not found"):
        C.load_model(tmp_path / "none.pt")


# ------------------------------------------------------------------ real photos

@pytest.mark.realdata
def test_real_photos_made_gray_are_colorized(tmp_path, ckpt):
    if not FLOWERS.is_dir():
        pytest.skip(f"reference photos not found at {FLOWERS} (see ../shared/data/README.md)")
    picks = [sorted(folder.glob("*.jpg"))[0] for folder in sorted(p for p in FLOWERS.iterdir() if p.is_dir())][:5]
    assert len(picks) == 5
    src = tmp_path / "gray"
    src.mkdir()
    for p in picks:
        Image.open(p).convert("L").save(src / f"{p.parent.name}_{p.stem}.png")
    assert C.colorize([src], tmp_path / "out", ckpt) == C.Summary(written=5)
    for gray in sorted(src.iterdir()):
        result = tmp_path / "out" / gray.name
        assert Image.open(result).size == Image.open(gray).size
        assert_L_kept(gray, result)
        lab = uint8_to_lab(np.array(Image.open(result)))
        assert lab[..., 1:].norm(dim=-1).mean() > 2  # coloured, not gray


def test_size_guard_empty_file_and_render_size(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo(30, 40)).save(src / "big.png")
    (src / "empty.png").write_bytes(b"")
    Image.fromarray(photo(8, 8)).save(src / "small.png")
    Image.fromarray(photo(20, 40)).save(src / "mid.png")
    limit = Image.MAX_IMAGE_PIXELS
    assert C.colorize([src], tmp_path / "out", ckpt, max_pixels=500) == C.Summary(written=1, failed=3)
    err = capsys.readouterr().err.splitlines()
    assert err == [  # over twice the limit Pillow's own guard refuses it at open; under, decode's check
        f"colorize: {src / 'big.png'}: 1200 pixels is over the --max-pixels limit 500 (decompression-bomb guard)",
        f"colorize: {src / 'empty.png'}: empty: zero-byte file",
        f"colorize: {src / 'mid.png'}: 40x20 is over the --max-pixels limit 500 (decompression-bomb guard)"]
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's global limit is restored after the run
    with pytest.raises(UserError, match="--render-size must be a multiple of 8"):
        C.colorize([src / "small.png"], tmp_path / "out2", ckpt, render_size=60)
    assert C.colorize([src / "small.png"], tmp_path / "out3", ckpt, render_size=32) == C.Summary(written=1)


def _matrix_profile(name: str, primaries, gamma: float) -> bytes:
    """A minimal ICC v2 RGB display profile (matrix/TRC, D50 white, one gamma), since
    Pillow can only make sRGB: enough for LittleCMS to convert through it."""
    import struct

    def s15(x):
        return struct.pack(">i", round(x * 65536))

    def xyz(v):
        return b"XYZ " + b"\0" * 4 + b"".join(s15(c) for c in v)

    text = name.encode() + b"\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 78
    curv = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0" * 2
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz(primaries[0])),
            (b"gXYZ", xyz(primaries[1])), (b"bXYZ", xyz(primaries[2])), (b"rTRC", curv), (b"gTRC", curv),
            (b"bTRC", curv)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (struct.pack(">I", offset + len(body)) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 28 + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + body


def test_wide_gamut_profile_is_kept_and_pixels_stay_in_it(tmp_path, ckpt):
    """An Adobe-RGB-like input: colorized in sRGB, converted back into its own space and
    tagged with its own profile bytes, so it looks right (its L kept) through that profile."""
    wide = _matrix_profile("test wide RGB", [(0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609),
                                             (0.1492, 0.0632, 0.7446)], 2.2)
    src = tmp_path / "wide.png"
    Image.fromarray(photo(30, 40)).save(src, icc_profile=wide)
    assert C.colorize([src], tmp_path / "out", ckpt) == C.Summary(written=1)
    out = tmp_path / "out" / "wide.png"
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == wide
        raw = np.array(im)
    a, b = decoded_L(src), decoded_L(out)
    # two 8-bit conversions between the spaces, each rounding: about a unit of L at most
    assert np.abs(a - b).max() < 1.0
    # the stored pixels are in the wide space, not sRGB: read as sRGB, their L is off
    untagged = uint8_to_lab(raw)[..., 0].numpy()
    assert np.abs(untagged - b).max() > 1.5
