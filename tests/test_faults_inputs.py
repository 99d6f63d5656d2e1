"""Faults from the inputs: a full disk during ingest, files that are not files (FIFO,
socket, device, broken symlinks) in the folder source and in colorize's inputs, animated
images, and a fuzz pass of the image decoder. Each drives the real processes (dvc repro in
a temp git+DVC project, the colorize CLI) and checks the rerun and `dvc status` after.

What DVC itself does with such entries in a dependency folder (it hashes every file of
data.folder.path before any project code runs) is pinned by
test_dvc_on_special_files_in_a_dependency_folder, so a DVC upgrade that changes it shows.
"""
from __future__ import annotations

import base64
import io
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline import imageio
from pipeline.imageio import STATUSES, decode, fit_square
from tests.conftest import IN_CI, SHARED_DATA, TINY, bin_path, make_project, run

DVC = bin_path("dvc")
UP_TO_DATE = "Data and pipelines are up to date."


# ---------------------------------------------------------------------------- helpers

def run_bounded(cmd, cwd, timeout: float) -> subprocess.CompletedProcess | None:
    """Run `cmd` in its own session; None when it is still running after `timeout` s (it
    and every child are then killed, so a hang cannot outlive the test)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def cannot(message: str) -> None:
    """A fault the test cannot set up: a skip here, a failure under CI=true."""
    if IN_CI:
        pytest.fail(message + " (CI=true: fault tests must not skip)")
    pytest.skip(message)


@contextmanager
def tmpfs(where: Path, size: int):
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode:
        cannot(f"cannot mount a tmpfs at {where} ({mounted.stderr.strip()}): needs root or CAP_SYS_ADMIN")
    try:
        yield
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def resize_tmpfs(where: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True, capture_output=True)


def used_bytes(where: Path) -> int:
    s = os.statvfs(where)
    return (s.f_blocks - s.f_bfree) * s.f_frsize


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.zeros((h, w, 3), np.uint8)
    base[..., 0] = np.linspace(30, 230, w)[None]
    base[..., 1] = np.linspace(200, 40, h)[:, None]
    base[..., 2] = 90 + 40 * seed % 120
    return np.clip(base.astype(int) + rng.integers(0, 12, base.shape), 0, 255).astype(np.uint8)


def make_special_files(folder: Path) -> dict[str, str]:
    """A FIFO, a socket, a character device (/dev/zero's numbers: reading never ends), a
    dangling link and a link loop in `folder`: {name: the status ingest must give it}."""
    os.mkfifo(folder / "pipe.jpg")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(folder / "sock.jpg"))  # the socket file stays after close
    try:
        os.mknod(folder / "zero.jpg", stat.S_IFCHR | 0o644, os.makedev(1, 5))
    except PermissionError:
        cannot("mknod of a character device needs root")
    (folder / "gone.jpg").symlink_to("no_such_file.jpg")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    return {"pipe.jpg": "not_regular_file", "sock.jpg": "not_regular_file", "zero.jpg": "not_regular_file",
            "gone.jpg": "broken_link", "loop.jpg": "broken_link"}


def read_manifest(project: Path) -> pd.DataFrame:
    return pd.read_parquet(project / "data" / "ingest" / "manifest.parquet").set_index("relpath")


# ---------------------------------------------------------------------------- disk full

def test_disk_full_in_ingest_is_one_line_leaves_no_truncated_shard_and_rerun_completes(tmp_path):
    """data/ on a small tmpfs: download fits, ingest's shards do not. The failure is one
    `error: disk full ...` line, every shard left is whole, nothing a person wrote is
    touched; after space is freed the rerun completes and `dvc status` is clean."""
    shard_size, image_size = 8, 32
    project = make_project(tmp_path / "proj", {**TINY, "ingest.image_size": image_size,
                                               "ingest.shard_size": shard_size})
    data = project / "data"
    kept = {p.relative_to(data): p.read_bytes() for p in data.rglob("*") if p.is_file()}
    with tmpfs(data, 64 << 20):
        for rel, content in kept.items():  # the tracked files (decisions.csv) onto the tmpfs
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            (data / rel).write_bytes(content)
        run([DVC, "repro", "download"], project)
        shard_bytes = shard_size * image_size * image_size * 3
        resize_tmpfs(data, used_bytes(data) + int(3.5 * shard_bytes))  # room for about three shards

        failed = run([DVC, "repro", "ingest"], project, check=False, timeout=300)
        assert failed.returncode != 0
        errors = [ln for ln in failed.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
        assert re.fullmatch(r"error: disk full writing data/ingest/\S+ \([\d.]+ (bytes|KB|MB) free\): "
                            r"free some space and rerun \(completed work is kept\)", errors[0]), errors[0]
        shards = data / "ingest" / "shards"
        left = sorted(p.name for p in shards.iterdir())
        assert left and all(re.fullmatch(r"shard-\d{5}\.npy", name) for name in left), left  # no temporary
        for name in left:  # every shard that exists is whole
            assert np.load(shards / name, mmap_mode="r").shape == (shard_size, image_size, image_size, 3)
        assert not (data / "ingest" / "manifest.parquet").exists()

        resize_tmpfs(data, 64 << 20)  # space freed
        run([DVC, "repro", "ingest"], project, timeout=300)
        assert run([DVC, "status", "download", "ingest"], project).stdout.strip() == UP_TO_DATE
        manifest = pd.read_parquet(data / "ingest" / "manifest.parquet")
        assert len(manifest) == TINY["data.garden.n_images"] and (manifest["status"] == "ok").sum() > 50
        for rel, content in kept.items():
            assert (data / rel).read_bytes() == content, rel  # decisions.csv untouched


# ---------------------------------------------------------------------------- files that are not files

def test_special_files_in_the_folder_get_a_reason_and_are_never_opened(tmp_path):
    """A FIFO, a socket, a device, a dangling link, a link loop and a symlinked folder in
    data.folder.path: download names each, ingest gives each a manifest row with a status
    (nothing hangs), the counts reconcile, and `dvc status` is clean. DVC's own hashing of
    the folder would hang or fail on them (see the next test), so they are named in
    .dvcignore, the workaround the README gives."""
    project = make_project(tmp_path / "proj", {**TINY, "data.sources": ["folder"]})
    folder = project / "data" / "folder"
    (folder / "roses").mkdir()
    for i in range(3):
        Image.fromarray(photo(40, 50, i)).save(folder / "roses" / f"r{i}.jpg", quality=90)
    expected = make_special_files(folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(photo(40, 50, 9)).save(elsewhere / "x.jpg")
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)  # neither os.walk nor DVC descends
    expected["linked"] = "not_regular_file"
    with open(project / ".dvcignore", "a") as f:
        f.write("".join(f"/data/folder/{name}\n" for name in expected if name != "linked"))
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "special files"], project)

    done = run_bounded([DVC, "repro", "ingest"], project, timeout=240)
    assert done is not None, "dvc repro ingest hung on a special file"
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for name in expected:  # download named each one
        assert re.search(rf"download: folder: \S*data/folder/{name}: .+ \(listed as {expected[name]}\)",
                         done.stderr), (name, done.stderr[-3000:])
    m = read_manifest(project)
    assert set(m.index) == {f"roses/r{i}.jpg" for i in range(3)} | set(expected)
    for name, status in expected.items():
        assert m.loc[name, "status"] == status and m.loc[name, "shard"] == -1, (name, m.loc[name].to_dict())
        assert m.loc[name, "error"] and "\n" not in m.loc[name, "error"]
    assert "FIFO" in m.loc["pipe.jpg", "error"] and "socket" in m.loc["sock.jpg", "error"]
    assert "character device" in m.loc["zero.jpg", "error"] and "dangling" in m.loc["gone.jpg", "error"]
    assert "loop" in m.loc["loop.jpg", "error"] and "folder (not followed)" in m.loc["linked", "error"]
    report = pd.read_json(project / "reports" / "ingest.json", typ="series")
    assert report["found"] == 3 + len(expected) and report["usable"] == 3
    assert report["usable"] + report["rejected"] == report["found"]
    assert run([DVC, "status", "download", "ingest"], project).stdout.strip() == UP_TO_DATE


def test_dvc_on_special_files_in_a_dependency_folder(tmp_path):
    """Pins what DVC 3 itself does when it hashes data.folder.path (a dependency of the
    download stage) before any project code runs; the README documents it. A dangling
    link, a link loop and a socket: `dvc status` exits 255 with `ERROR: unexpected error -
    [Errno N] ...: '<path>'`; a FIFO: it blocks in open() for ever; a symlinked folder
    is not descended into (a change there is not seen). A name in .dvcignore avoids each."""
    project = make_project(tmp_path / "proj", {**TINY, "data.sources": ["folder"]})
    folder = project / "data" / "folder"
    Image.fromarray(photo(40, 50)).save(folder / "a.jpg")
    run([DVC, "repro", "download"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "download"], project)

    def status_with(make, name: str, timeout: float = 60):
        make(folder / name)
        try:
            return run_bounded([DVC, "status", "download"], project, timeout=timeout)
        finally:
            (folder / name).unlink()

    def bind(path):
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))

    for make, errno_text in [(lambda p: p.symlink_to("nowhere.jpg"), r"\[Errno 2\] No such file or directory"),
                             (lambda p: p.symlink_to(p.name), r"\[Errno 40\] Too many levels of symbolic links"),
                             (bind, r"\[Errno 6\] No such device or address")]:
        proc = status_with(make, "bad.jpg")
        assert proc is not None and proc.returncode == 255, proc and proc.stderr
        assert re.search(rf"ERROR: unexpected error - {errno_text}: '\S*data/folder/bad.jpg'", proc.stderr), proc.stderr
    assert status_with(os.mkfifo, "pipe.jpg", timeout=8) is None, "DVC no longer hangs on a FIFO: update the README"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(photo(40, 50, 1)).save(elsewhere / "x.jpg")
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    assert run([DVC, "status", "download"], project).stdout.strip() == UP_TO_DATE  # not descended into
    (folder / "linked").unlink()

    os.mkfifo(folder / "pipe.jpg")
    (project / ".dvcignore").write_text((project / ".dvcignore").read_text() + "/data/folder/pipe.jpg\n")
    proc = run_bounded([DVC, "status", "download"], project, timeout=60)
    assert proc is not None and proc.returncode == 0, "a .dvcignore name should spare DVC the FIFO"


def test_colorize_skips_special_files_and_fails_broken_links_with_one_line_each(tmp_path):
    """Old code: the FIFO blocked colorize for ever and a link loop crashed it in find_inputs."""
    from tests.test_colorize import _params, save_like_train

    ckpt = save_like_train(tmp_path / "tiny.pt", _params())
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(2):
        Image.fromarray(photo(20, 24, i)).save(src / f"ok{i}.png")
    expected = make_special_files(src)
    proc = run_bounded([sys.executable, "-m", "pipeline.colorize", str(src), "-o", str(out), "--model", str(ckpt)],
                       cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert proc is not None, "colorize hung on a special file"
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr  # broken links failed
    assert proc.stdout.strip().splitlines()[-1] == "colorize: 2 written, 2 failed, 3 skipped"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(expected), proc.stderr
    for name, status in expected.items():
        line = next(ln for ln in lines if ln.startswith(f"colorize: {src / name}: "))
        assert ("skipped: " in line) == (status == "not_regular_file"), line
    assert sorted(p.name for p in out.iterdir()) == ["ok0.png", "ok1.png"]


# ---------------------------------------------------------------------------- animations

def _frames(n: int, size=(30, 20)) -> list[Image.Image]:
    return [Image.fromarray(np.full((size[1], size[0], 3), (40 * i % 256, 200, 90 + 7 * i % 160), np.uint8))
            for i in range(n)]


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF"])
def test_animation_uses_its_first_frame_and_says_so(fmt):
    frames = _frames(5)
    buf = io.BytesIO()
    options = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], **options)
    d = decode(buf.getvalue(), 10_000_000)
    assert d.status == "ok" and "animated: first of 5 frames" in d.notes, d.notes
    assert np.abs(d.pixels.astype(int) - np.asarray(frames[0])).max() <= 2  # the first frame's pixels
    single = io.BytesIO()
    frames[0].save(single, fmt, **options)
    assert "animated" not in decode(single.getvalue(), 10_000_000).notes


# Found by the fuzz below: 211 bytes of GIF whose second frame claims 5696x23552 px.
# Counting frames by seeking grew the canvas past the max_pixels check and decoded
# 134 Mpx (3 s, 400 MB) for a 24x16 image; counting must parse frame headers only.
GROWING_GIF = base64.b64decode(
    "R0lGODdhGAAQAIEAAADIWgAAAAAAAAAAACwAAAAAGAAQAAAIIgABCBxIsKDBgwgTKlzIsKHDhxAjSpxIsaLFixgzatxo"
    "MCAAIfkEAQAAAQAsAAAAREAWABgAEACBKMhhAAAAAAAAAAAACCIAAQgcSLCgwYMIEypcyLChw4cQI0qcSLGixYsYM2rc"
    "aDAgACH5BAEAAAEALAAAAAAYABAQAIFQyGgAAAAAAAAAAAAIIgABCBxIsKDBgwgTKlzIsKHDhxAjSpxIsaLFixgzatxo"
    "MCAAOw==")


def test_counting_frames_decodes_none_of_them():
    d = decode(GROWING_GIF, 4_000_000)
    assert d.status == "ok" and d.pixels.shape == (16, 24, 3) and d.notes.startswith("animated: first of 3 frames")


# ---------------------------------------------------------------------------- decoder fuzz

FUZZ_MAX_PIXELS = 4_000_000  # a mutated header may claim any size: keep the fuzz in memory
FUZZ_SECONDS_PER_INPUT = 10  # far above any real decode of these small files (~1-20 ms)


def _encode(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def _seed_files() -> list[bytes]:
    """Real JPEGs (and a PNG of one) from ../shared/data/flowers-128 when present, else
    made here; plus every other container the decoder meets, made here."""
    flowers = SHARED_DATA / "flowers-128"
    if flowers.is_dir():
        real = [sorted(d.glob("*.jpg"))[0].read_bytes() for d in sorted(p for p in flowers.iterdir() if p.is_dir())][:3]
    else:
        real = [_encode(Image.fromarray(photo(48, 64, i)), "JPEG", quality=85) for i in range(3)]
    base = Image.open(io.BytesIO(real[0])).convert("RGB").resize((48, 40))
    frames = _frames(3, size=(24, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    icc = imageio.ImageCms.ImageCmsProfile(imageio._SRGB_PROFILE).tobytes()
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    return real + [
        _encode(base, "PNG"),
        _encode(rgba, "PNG", icc_profile=icc),
        _encode(Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)), "PNG"),
        _encode(base, "JPEG", quality=80, progressive=True, exif=exif),
        _encode(base.convert("CMYK"), "JPEG", quality=80),
        _encode(base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "GIF"),
        _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        _encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        _encode(base, "TIFF", compression="tiff_lzw"),
        _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        _encode(base, "WEBP", quality=70),
        _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True),
        _encode(base, "BMP"),
        _encode(base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "BMP"),
    ]


SEEDS = _seed_files()
_position = st.integers(0, 1 << 16)
_MUTATION = st.one_of(
    st.tuples(st.just("flip"), _position, st.integers(0, 7)),
    st.tuples(st.just("truncate"), _position),
    st.tuples(st.just("insert"), _position, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("remove"), _position, st.integers(1, 512)),
    st.tuples(st.just("duplicate"), _position, st.integers(1, 512)),
    st.tuples(st.just("splice"), _position, st.integers(0, len(SEEDS) - 1), _position, st.integers(1, 512)),
    # header fields turned into extremes: sizes, counts, offsets
    st.tuples(st.just("overwrite"), _position, st.sampled_from([b"\x00", b"\xff", b"\x7f", b"\x80"]), st.integers(1, 4)),
)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    b = bytearray(data)
    for kind, pos, *args in mutations:
        pos = pos % (len(b) + 1)
        if kind == "flip" and pos < len(b):
            b[pos] ^= 1 << args[0]
        elif kind == "truncate":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = args[0]
        elif kind == "remove":
            del b[pos:pos + args[0]]
        elif kind == "duplicate":
            b[pos:pos] = b[pos:pos + args[0]]
        elif kind == "splice":
            other = SEEDS[args[0]]
            start = args[1] % len(other)
            b[pos:pos] = other[start:start + args[2]]
        elif kind == "overwrite":
            b[pos:pos + args[1]] = args[0] * args[1]
    return bytes(b)


class DecodeHung(Exception):
    pass


def _alarm(signum, frame):
    raise DecodeHung(f"no result within {FUZZ_SECONDS_PER_INPUT} s")


def check_decodes_safely(data: bytes, draft_size: int | None) -> str:
    """decode as ingest calls it (then fit_square), under a time guard: never raises,
    never hangs, always a status of STATUSES; ok means usable pixels."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, FUZZ_SECONDS_PER_INPUT)
    try:
        d = decode(data, FUZZ_MAX_PIXELS, draft_size=draft_size)
        if d.status == "ok":
            assert d.pixels is not None and d.pixels.dtype == np.uint8 and d.pixels.ndim == 3
            assert d.pixels.shape[2] == 3 and min(d.pixels.shape[:2]) >= 1 and d.width * d.height >= 1
            assert fit_square(d.pixels, 16).shape == (16, 16, 3)
        else:
            assert d.pixels is None and d.error and "\n" not in d.error and len(d.error) <= 300
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert d.status in STATUSES, d.status
    return d.status


def test_fuzz_seeds_decode_ok():
    for i, data in enumerate(SEEDS):
        assert check_decodes_safely(data, None) == "ok", i


@settings(max_examples=400, derandomize=True, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, len(SEEDS) - 1), mutations=st.lists(_MUTATION, min_size=1, max_size=4),
       draft=st.sampled_from([None, 32]))
def test_fuzz_decoder_never_crashes_or_hangs(seed, mutations, draft):
    check_decodes_safely(mutate(SEEDS[seed], mutations), draft)
