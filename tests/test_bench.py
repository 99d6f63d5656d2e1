"""Code test of the benchmark suite: one --smoke pass, so `make bench` cannot rot.

It checks that every section runs and reports what it says (figures with the fields
the performance table needs, the baseline's counts agreeing, the rerun list parsed from a
real `dvc repro`), never how fast anything was.
"""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

SECTIONS_WITH_BASELINE = {"ingest", "lab", "curate", "priors", "loader", "train_step", "evaluate", "colorize"}


def test_smoke_pass_writes_bench_json_and_the_performance_table(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# x\n\n<!-- bench:begin -->\nold table\n<!-- bench:end -->\n\nafter\n")
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench.suite", "--smoke", "--out", str(out), "--doc", str(doc),
                           "--work", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True
    figures = {f["id"]: f for f in report["figures"]}
    sections = {f["section"] for f in figures.values()}
    assert {"ingest", "lab", "curate", "priors", "loader", "train_step", "evaluate", "colorize", "memory",
            "overhead"} <= sections
    for name in ("unet", "zhang", "resnet", "gan", "cnn"):
        assert f"train_step_{name}" in figures
    for f in figures.values():
        assert f["ours"] is not None and f["ours"] > 0, f
        if f["section"] in SECTIONS_WITH_BASELINE and f["id"] not in ("curate_near_duplicates",
                                                                       "colorize_1mp_latency"):
            assert f["baseline"] > 0 and f["ratio"] > 0, f
        if f["target"]:
            assert f["met"] in (True, False), f
        assert f["command"].startswith("python -m bench.suite --only ")
    assert report["details"]["priors"]["counts_agree"] is True
    # The overhead section ran a real dvc repro, a no-op one, and one after a train.* change.
    rerun = report["details"]["overhead"]["rerun"]
    assert rerun == ["params", "train", "evaluate", "report"]  # params: the file changed
    # memory: one peak per stage and size
    assert set(report["details"]["memory"]) - {"seconds"} == {"40", "80"}
    # GPU: ran where CUDA is, else says why not
    gpu = report["details"]["gpu"]
    assert gpu["ran"] is True or "cuda" in gpu["reason"]
    text = doc.read_text()
    assert "old table" not in text and text.endswith("\nafter\n")
    assert text.count("| ") > len(figures) and "train step, gan" in text


def test_only_keeps_the_other_sections(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("<!-- bench:begin --><!-- bench:end -->\n")
    out = tmp_path / "bench.json"
    previous = {"figures": [{"id": "evaluate", "section": "evaluate", "what": "kept", "unit": "img/s", "ours": 1.0,
                             "ours_spread": [1.0, 1.0], "baseline": 0.5, "baseline_spread": None, "ratio": 2.0,
                             "target": None, "met": None, "note": "", "command": "python -m bench.suite --only evaluate"}],
                "details": {"evaluate": {"images": 3}}}
    out.write_text(json.dumps(previous))
    proc = subprocess.run([sys.executable, "-m", "bench.suite", "--smoke", "--only", "lab", "--out", str(out),
                           "--doc", str(doc)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert [f["section"] for f in report["figures"]] == ["lab", "evaluate"]
    assert report["details"]["evaluate"] == {"images": 3}
    bad = subprocess.run([sys.executable, "-m", "bench.suite", "--only", "nope", "--out", str(out), "--doc",
                          str(doc)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "unknown section" in bad.stderr
