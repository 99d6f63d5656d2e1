"""Outputs that reproduce on any x86-64 machine.

Other machines are simulated here by the environment variables that make the libraries
pick other CPU kernels: ATEN_CPU_CAPABILITY (torch), ONEDNN_MAX_CPU_ISA (oneDNN),
MKL_ENABLE_INSTRUCTIONS (MKL), NPY_DISABLE_CPU_FEATURES (numpy), OPENBLAS_CORETYPE
(numpy's BLAS). Before colorize.common.portable, the same `dvc repro` under these settings
gave three different data/relevance hashes (and the sse41 setting even changed two
garden JPEGs); see docs/reproducibility.md.

Every stage's DVC outputs must be bit-identical under every setting (their md5s in
dvc.lock are compared), the wall-clock seconds in the training reports aside: the data
stages, and train and evaluate with `train.portable: true` (the default). With
`train.portable: false` training picks the CPU's own kernels; docs/reproducibility.md
has what that changes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, TINY, bin_path, make_project, run

MACHINES = {
    "this-cpu": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"},
    "sse41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
              "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR", "OPENBLAS_CORETYPE": "Prescott"},
}
# Wall-clock seconds and the MLflow run id (report.html shows both): the only outputs that may differ.
RUN_SPECIFIC = {"reports/train.json", "reports/train_history.csv", "reports/report.html"}


def locked_outs(project) -> dict[str, dict[str, str]]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {name: {o["path"]: o["md5"] for o in stage.get("outs", [])} for name, stage in lock["stages"].items()}


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    """The same project, `dvc repro` on each simulated machine."""
    base = tmp_path_factory.mktemp("machines")
    out = {}
    for name, env in MACHINES.items():
        proj = make_project(base / name, TINY)
        run([bin_path("dvc"), "repro"], proj, env=env)
        out[name] = proj
    return out


@pytest.mark.slow
@pytest.mark.parametrize("machine", [m for m in MACHINES if m != "this-cpu"])
def test_every_stage_gives_the_same_bytes_on_other_cpus(machines, machine):
    here, there = locked_outs(machines["this-cpu"]), locked_outs(machines[machine])
    assert here.keys() == there.keys()
    differ = {stage: sorted(p for p in here[stage] if p not in RUN_SPECIFIC and here[stage][p] != there[stage][p])
              for stage in here}
    assert not any(differ.values()), {s: p for s, p in differ.items() if p}
    metrics = [json.loads((machines[m] / "reports" / "metrics.json").read_text()) for m in ("this-cpu", machine)]
    assert metrics[0] == metrics[1] and metrics[0]["n_test"] > 0


def test_pinning_after_numpy_is_refused():
    code = "import numpy\nfrom colorize.common import portable\nportable.pin()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode != 0 and "NotPortable" in done.stderr and "already chosen" in done.stderr


def test_a_data_stage_run_as_a_program_pins_its_kernels(tmp_path):
    """What `dvc repro` runs: the module as __main__ pins before numpy and torch load. (In an
    empty directory the stage stops at its missing params.yaml, after the pinning.)"""
    code = ("import runpy, sys\n"
            "try:\n    runpy.run_module('colorize.stages.split', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "import os, torch\n"
            "from colorize.common import portable\n"
            "portable.configure_torch()\n"
            "print(os.environ['ATEN_CPU_CAPABILITY'], torch.backends.cpu.get_cpu_capability(),"
            " torch.backends.mkldnn.enabled, torch.get_num_threads())")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert "params.yaml" in done.stderr, done.stderr[-2000:]
    assert done.stdout.split() == ["default", "DEFAULT", "False", "2"], done.stderr[-2000:]


NEAR_DUP_ANN = """
from colorize.common import portable
portable.pin()
import hashlib, numpy as np, torch
from colorize.curation import checks
emb = np.random.default_rng(0).standard_normal((3000, len(checks.WINDOWS), 24)).astype(np.float32)
emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
q, r, s = checks._candidates_ann(torch.from_numpy(emb), 0.5, 6)
print(len(q), hashlib.sha256(q.tobytes() + r.tobytes() + s.tobytes()).hexdigest())
"""


def test_near_dup_ann_search_gives_the_same_bits_on_other_cpus():
    """curate's approximate index pinned: faiss's AVX2 / AVX-512 kernels, which a machine
    would otherwise pick by itself, cannot change a candidate or its similarity."""
    out = set()
    for level in ("AVX512", "AVX2", "NONE"):
        env = {**os.environ, "FAISS_SIMD_LEVEL": level, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", NEAR_DUP_ANN], capture_output=True, text=True, cwd=ROOT, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        out.add(done.stdout.strip())
    assert len(out) == 1 and int(next(iter(out)).split()[0]) > 0, out
