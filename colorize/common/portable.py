"""Portable floats: a stage computes the same bits on every x86-64 machine.

Import this module first, before numpy or torch, in a stage whose outputs must not depend
on the CPU: the data stages (download, ingest, relevance, curate, split, priors),
evaluate, and train unless params.yaml says `train.portable: false`. Why:
torch, oneDNN, MKL, numpy and OpenBLAS each pick kernels by the CPU they find (AVX-512,
AVX2, SSE), and each kernel sums in its own order, so the last bits of a float differ
from machine to machine. A network trained for hundreds of steps (the relevance
classifier) turns those last bits into different weights and scores (measured: up to
0.26 apart in relevance between AVX-512 and AVX2 settings), and everything written
downstream inherits it.

What it pins, each to the code path every x86-64 CPU has:
- ATEN_CPU_CAPABILITY=default: torch's own kernels without AVX dispatch;
- oneDNN off (torch.backends.mkldnn): convolutions go through im2col and MKL's GEMM;
- MKL_CBWR=COMPATIBLE: MKL's conditional numerical reproducibility mode, the same
  results on any Intel or AMD x86 CPU (for a fixed thread count);
- NPY_DISABLE_CPU_FEATURES: numpy's dispatched SIMD loops off above its x86-64-v2
  baseline; OPENBLAS_CORETYPE: one OpenBLAS kernel set for numpy's matmul;
- FAISS_SIMD_LEVEL=NONE: faiss (the near-duplicate index) without its AVX2/AVX-512
  dispatch, which changes the similarities' last bits and so the candidates;
- threads: torch and the BLAS libraries use THREADS threads whatever the core count,
  because a parallel reduction's order depends on how it is split.

These are set whatever the environment says (ONEDNN_MAX_CPU_ISA and the like are what
differ between machines: they must not matter). They cost speed: docs/reproducibility.md
has the figures. A stage pins when it runs as a program (`python -m colorize.stages.X`,
what `dvc repro` does), at the top of its module:

    from colorize.common import portable
    if __name__ == "__main__":
        portable.pin()      # before numpy and torch are imported

A process that imported numpy or torch before cannot be pinned any more: `pin()` then
raises rather than compute unpinned bits silently. Code that calls a stage's `main()`
in-process (the tests) runs unpinned, with the same results on the same machine.

With `train.portable: false` training takes the CPU's fastest kernels instead: the same
bits on one machine, not across machines (the test PSNR differed by 0.16 dB between the
AVX-512 and AVX2 settings). On a GPU, the GPU's kernels decide, whatever this says.
"""
from __future__ import annotations

import os
import sys

THREADS = 2  # torch and BLAS threads of a data stage, on every machine

# numpy 2.4's x86 dispatch targets above its baseline (numpy is pinned in requirements.lock).
NUMPY_SIMD = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"

ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "NPY_DISABLE_CPU_FEATURES": NUMPY_SIMD,
    "OPENBLAS_CORETYPE": "Nehalem",  # OpenBLAS SSE4.2 kernels: numpy itself needs x86-64-v2
    "FAISS_SIMD_LEVEL": "NONE",  # faiss's scalar distance kernels (curate's near-duplicate index)
    "OMP_NUM_THREADS": str(THREADS),
    "MKL_NUM_THREADS": str(THREADS),
    "OPENBLAS_NUM_THREADS": str(THREADS),
}


_pinned = False


class NotPortable(RuntimeError):
    pass


def pin(switch: tuple[str, str] | None = None) -> None:
    """Pin the kernels (see the module docstring). Call before importing numpy or torch.

    `switch`: a (section, key) of params.yaml that can turn pinning off (train.portable);
    read here with yaml alone, before numpy. A file that cannot be read pins (the stage's
    own params check then reports it).
    """
    global _pinned
    if _pinned:
        return
    if switch is not None and _switched_off(*switch):
        return
    late = [m for m in ("numpy", "torch") if m in sys.modules]
    if late:
        raise NotPortable(
            f"colorize.common.portable.pin() after {' and '.join(late)} was imported: its CPU "
            "kernels are already chosen; pin at the top of the stage module, before other imports")
    os.environ.update(ENV)
    _pinned = True


def _switched_off(section: str, key: str) -> bool:
    import yaml

    from colorize.common import paths

    try:
        value = yaml.safe_load(paths.PARAMS.read_text())[section][key]
    except Exception:  # noqa: BLE001 - any unreadable file: pin, and let load_params say why
        return False
    return value is False


def pinned() -> bool:
    return _pinned


def configure_torch() -> None:
    """The runtime half of pin(), for torch (read after import); a no-op when unpinned."""
    if not _pinned:
        return
    import torch

    torch.backends.mkldnn.enabled = False
    torch.set_num_threads(THREADS)
