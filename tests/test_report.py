"""The offline HTML report (colorize/evaluation/report.py; the report stage writes it):
deterministic bytes, graceful without optional inputs, a one-line error without
metrics.json, nothing that reaches for the network; and, in Debian's chromium
(tests/browser/report_offline.mjs, playwright-core), every figure decoded, the metrics
table readable and not one request beyond file:/data:.

The browser tests need `make browser` (chromium + tests/browser/node_modules): without
them they skip locally and fail under CI=true, where `make test` installs them.
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from colorize.common.errors import UserError
from colorize.evaluation import report
from tests.conftest import ROOT

BROWSER_DIR = ROOT / "tests" / "browser"
N_TEST = 40

# ----------------------------------------------------------------------------- a reports folder


def _png(path: Path, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def make_reports(root: Path, full: bool = True) -> Path:
    """A small reports/ as the stages write it (with the new ssim/delta_e/CI keys when full)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per_image = pd.DataFrame({
        "id": [f"id{i:03d}" for i in range(N_TEST)], "source": "garden",
        "relpath": [f"img_{i:05d}.jpg" for i in range(N_TEST)],
        "label": [("rose", "tulip", "daisy")[i % 3] for i in range(N_TEST)],
        "psnr_model": rng.normal(23.6, 2, N_TEST), "psnr_gray": rng.normal(16.2, 2, N_TEST),
        "psnr_const": rng.normal(16.4, 2, N_TEST), "psnr_lookup": rng.normal(16.3, 2, N_TEST),
        "colourfulness_model": rng.normal(70, 10, N_TEST), "colourfulness_truth": rng.normal(80, 10, N_TEST),
    })
    per_image.to_csv(root / "eval_per_image.csv", index=False, float_format="%.4f")
    metrics = {"psnr": 23.64478, "psnr_median": 23.66, "psnr_gray": 16.15141, "psnr_gray_median": 15.98,
               "psnr_const": 16.44158, "psnr_const_median": 15.86, "psnr_lookup": 16.39071,
               "colourfulness": 72.2, "colourfulness_gray": 0.07, "colourfulness_const": 12.1,
               "colourfulness_lookup": 41.7, "colourfulness_truth": 81.6, "colourfulness_ratio": 72.2 / 81.6,
               "best_baseline": "const",
               "psnr_best_baseline": 16.44158, "gain_over_best_baseline": 7.2032, "n_test": N_TEST}
    if full:
        for m, (ssim, de) in {"model": (0.91, 4.1), "gray": (0.85, 12.5), "const": (0.83, 11.9),
                              "lookup": (0.84, 11.2)}.items():
            for fam, v in (("ssim", ssim), ("delta_e", de), ("psnr", metrics["psnr" if m == "model" else f"psnr_{m}"])):
                key = fam if m == "model" else f"{fam}_{m}"
                metrics.setdefault(key, v)
                metrics[f"{key}_median"] = metrics.get(f"{key}_median", v - 0.01)
                metrics[f"{key}_ci95"] = [v - 0.5, v + 0.5]
        metrics["gain_over_best_baseline_ci95"] = [6.61, 7.79]
        pd.DataFrame({"label": ["daisy", "rose", "tulip"], "n": [13, 14, 13], "psnr": [23.1, 24.2, 23.5],
                      "psnr_const": [16.0, 16.9, 16.4], "gain": [7.1, 7.3, 7.1]}).to_csv(
            root / "eval_per_class.csv", index=False)
        pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.2, 0.15, 0.12], "val_loss": [0.21, 0.17, 0.14],
                      "val_psnr": [18.0, 21.0, 23.0], "lr": [3e-3, 2e-3, 1e-3], "seconds": [5.1, 5.0, 5.2]}
                     ).to_csv(root / "train_history.csv", index=False)
        pd.DataFrame({"temperature": [0.01, 0.38, 1.0], "psnr": [23.5, 23.6, 23.2], "psnr_gray": [16.2] * 3,
                      "colourfulness": [60.0, 70.0, 75.0], "colourfulness_truth": [81.6] * 3}).to_csv(
            root / "temperature_sweep.csv", index=False)
        (root / "train.json").write_text(json.dumps({"model": "unet", "n_params": 487730,
                                                     "seconds_per_epoch": 5.4, "val_psnr": 24.4}))
        (root / "curate.json").write_text(json.dumps({
            "found": 100, "kept": 90, "dropped": 10, "by_reason": {"grayscale": 6, "blurry": 0, "duplicate": 4},
            "garden_accuracy": {"grayscale": {"precision": 1.0, "recall": 0.857, "tp": 6, "fp": 0, "fn": 1},
                                "near_duplicate": {"precision": 1.0, "recall": 1.0, "families": 2}},
            "human_decisions": 0}))
        (root / "relevance.json").write_text(json.dumps({"threshold": 0.2, "auc": 0.9524, "note": ""}))
        (root / "split.json").write_text(json.dumps({"total": 90, "train": 60, "val": 15, "test": 15}))
        (root / "priors.json").write_text(json.dumps({"n_bins": 261, "entropy_bits": 5.5,
                                                      "top_bins": [{"a": -20.0, "b": 20.0, "share": 0.149}]}))
        for i, (name, size) in enumerate({"eval_grid.png": (96, 160), "train_grid.png": (96, 128),
                                          "curate_examples.png": (200, 120), "priors_prior.png": (120, 100),
                                          "priors_weights.png": (120, 100)}.items()):
            _png(root / name, size, seed=i)
    (root / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return root


class _Refs(HTMLParser):
    """Every URL-valued attribute and every tag name in a page."""

    URL_ATTRS = {"src", "href", "srcset", "poster", "action", "formaction", "data", "background", "ping"}

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, k, v or "") for k, v in attrs if k in self.URL_ATTRS]


def _refs(text: str) -> _Refs:
    parser = _Refs()
    parser.feed(text)
    return parser


def _run_report(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "colorize.stages.report", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------- pure python


def test_same_inputs_same_bytes(tmp_path):
    """`python -m colorize.stages.report` twice, in two processes, and build_html in this one:
    one byte string (no timestamps, no matplotlib version chunk, no hash-seeded order)."""
    make_reports(tmp_path / "reports")
    first = _run_report(tmp_path)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "reports" / "report.html"
    once = out.read_bytes()
    out.unlink()
    second = _run_report(tmp_path)
    assert second.returncode == 0, second.stderr
    assert out.read_bytes() == once
    assert report.build_html(tmp_path / "reports").encode("utf-8") == once
    # Charts drawn in the report itself carry no "Software" (matplotlib version) chunk.
    for uri in re.findall(r'src="data:image/png;base64,([^"]+)"', once.decode()):
        assert b"matplotlib" not in base64.b64decode(uri)


def test_full_report_content(tmp_path):
    reports = make_reports(tmp_path / "reports")
    text = report.build_html(reports)
    # Header: model and parameters, no date.
    assert "Colorization report: unet" in text and "487,730" in text
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "a date in a report that must be date-free"
    # Metrics: every family, every method, the strongest baseline highlighted, the gain and its CI.
    table = re.search(r'<table id="metrics-table">.*?</table>', text, re.S).group(0)
    for label in ("PSNR (dB)", "SSIM", "ΔE2000", "Colourfulness", "Model", "gray", "const", "lookup"):
        assert label in table, label
    for value in ("23.64", "16.15", "16.44", "16.39", "0.9100", "4.10", "+7.20", "[+6.61, +7.79]", "median 23.66"):
        assert value in table, value
    best_rows = re.findall(r'<tr class="best">(.*?)</tr>', table)
    assert len(best_rows) == 1 and best_rows[0].startswith("<td>const") and "strongest baseline" in best_rows[0]
    assert "beats the strongest baseline, <b>const</b>" in text
    assert "<b>0.88×</b> as colourful as the truth's (72.2 against 81.6)" in text  # beside the gain: sepia shows
    # ΔE: lower is better, so the model's lower ΔE is shown as a gain (green).
    assert '<span class="pos">−7.80</span>' in table
    assert 'id="per-class-table"' in text and "tulip" in text
    # Every image is an embedded PNG: 5 inputs + histogram + training curves + sweep.
    refs = _refs(text)
    imgs = [v for tag, k, v in refs.refs if tag == "img"]
    assert len(imgs) == 8 and all(v.startswith("data:image/png;base64,") for v in imgs)
    assert "Not available: eval_best_median_worst.png not found" in text
    assert text.count('class="na"') == 1  # psnr_hist.png is not there either...
    assert "psnr_hist.png" not in text  # ...but the histogram is drawn instead of noted


def test_no_network_references(tmp_path):
    """No URL in the page but data: and in-page anchors; no scripts, no CSS url(), a CSP
    that forbids everything else, and an empty favicon."""
    text = report.build_html(make_reports(tmp_path / "reports"))
    assert "http://" not in text and "https://" not in text
    refs = _refs(text)
    assert "script" not in refs.tags and "iframe" not in refs.tags and "object" not in refs.tags
    assert "url(" not in text and "@import" not in text
    for tag, attr, value in refs.refs:
        assert value.startswith(("data:", "#")), (tag, attr, value[:80])
    assert ('<link rel="icon" href="data:,">') in text
    assert "default-src 'none'; img-src data:" in text


def test_existing_histogram_is_embedded_as_is(tmp_path):
    reports = make_reports(tmp_path / "reports")
    _png(reports / "psnr_hist.png", (50, 30), seed=9)
    _png(reports / "eval_best_median_worst.png", (96, 288), seed=10)
    text = report.build_html(reports)
    assert base64.b64encode((reports / "psnr_hist.png").read_bytes()).decode() in text
    assert base64.b64encode((reports / "eval_best_median_worst.png").read_bytes()).decode() in text
    assert 'class="na"' not in text.split('id="priors"')[0].split('id="plots"')[1]


def test_only_metrics_json_degrades_gracefully(tmp_path):
    """Old-style metrics.json alone: every other section says what is missing, no crash."""
    reports = make_reports(tmp_path / "reports", full=False)
    (reports / "eval_per_image.csv").unlink()
    text = report.build_html(reports)
    assert 'id="metrics-table"' in text and "23.64" in text and "SSIM" not in text
    for name in ("train.json", "eval_per_class.csv", "eval_per_image.csv", "train_history.csv",
                 "temperature_sweep.csv", "eval_grid.png", "train_grid.png", "curate.json", "relevance.json",
                 "split.json", "priors.json", "priors_prior.png", "priors_weights.png", "curate_examples.png"):
        assert f"Not available: {name} not found" in text or f"{name} not found" in text, name
    assert "<img" not in text


def test_unreadable_inputs_are_noted_not_fatal(tmp_path):
    reports = make_reports(tmp_path / "reports")
    (reports / "eval_grid.png").write_bytes(b"not a png")
    (reports / "curate.json").write_text("{truncated")
    (reports / "train_history.csv").write_text("")
    (reports / "split.json").write_text("[1, 2]")
    (reports / "temperature_sweep.csv").write_text("a,b\n1,2\n")
    text = report.build_html(reports)
    assert "eval_grid.png unreadable" in text
    assert "curate.json unreadable (JSONDecodeError)" in text
    assert "train_history.csv unreadable" in text or "train_history.csv has no rows" in text
    assert "split.json is not a JSON object" in text
    assert "temperature_sweep.csv has no known columns" in text


def test_metrics_keys_read_defensively(tmp_path):
    """Only some families, a CI as a dict, text where a number was expected, no best_baseline."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "metrics.json").write_text(json.dumps({
        "psnr": 20.0, "psnr_ci95": {"lo": 19.5, "hi": 20.5}, "psnr_gray": 15.0, "psnr_lookup": 17.0,
        "delta_e": "n/a", "delta_e_gray": None, "ssim_lookup": 0.5}))
    text = report.build_html(reports)
    table = re.search(r'<table id="metrics-table">.*?</table>', text, re.S).group(0)
    assert "95% CI [19.50, 20.50]" in table
    assert '<tr class="best"><td>lookup' in table  # the highest baseline PSNR, computed
    assert "+3.00" in table and "const" not in table and "ΔE2000" not in table


def test_training_curves_panels(tmp_path):
    """One panel per quantity with numbers: a gan's critic columns (NaN before the
    adversarial epochs) add a fourth; all-NaN or absent ones add none."""
    import io

    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.3, 0.2, 0.1], "val_loss": [0.3, 0.2, 0.2],
                            "val_psnr": [20.0, 21.0, 22.0], "lr": [1e-3] * 3, "seconds": [1.0] * 3,
                            "critic_wasserstein": [np.nan, 0.5, 0.4], "gradient_penalty": [np.nan, 0.1, 0.1]})
    widths = {}
    for name, frame in {"gan": history, "gan-warmup-only": history.assign(critic_wasserstein=np.nan,
                                                                          gradient_penalty=np.nan),
                        "unet": history.drop(columns=["critic_wasserstein", "gradient_penalty"]),
                        "loss-only": history[["epoch", "train_loss"]]}.items():
        with Image.open(io.BytesIO(report.training_curves_png(frame))) as im:
            widths[name] = im.width
    dpi = report.DPI
    assert widths == {"gan": (3.0 * 4 + 0.4) * dpi, "gan-warmup-only": (3.0 * 3 + 0.4) * dpi,
                      "unet": (3.0 * 3 + 0.4) * dpi, "loss-only": (3.0 + 0.4) * dpi}
    assert report.training_curves_png(history[["epoch", "seconds"]]) is None


def test_missing_metrics_is_a_one_line_error(tmp_path):
    (tmp_path / "reports").mkdir()
    proc = _run_report(tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: report:") and "metrics.json" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "reports" / "report.html").exists()
    with pytest.raises(UserError, match="metrics.json"):
        report.build_html(tmp_path / "reports")
    (tmp_path / "reports" / "metrics.json").write_text("{oops")
    proc = _run_report(tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ----------------------------------------------------------------------------- in a browser


def open_in_chromium(page: Path, shot: Path | None = None) -> dict:
    cmd = ["node", str(BROWSER_DIR / "report_offline.mjs"), "--file", str(page)]
    if shot:
        cmd += ["--shot", str(shot)]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=BROWSER_DIR, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip(), f"no output from {cmd}\nstderr: {proc.stderr[-3000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["returncode"] = proc.returncode
    result["stderr"] = proc.stderr[-3000:]
    print(f"\nchromium: {time.monotonic() - started:.1f} s, {result.get('nImages')} images, "
          f"{len(result.get('requests', []))} request(s): {result.get('requests')}")
    return result


def assert_offline_and_rendered(result: dict, text: str, metrics: dict) -> None:
    context = f"\n{json.dumps({k: v for k, v in result.items() if k != 'images'}, indent=1)[:4000]}"
    assert result["ok"] and result["returncode"] == 0, f"{result.get('error') or result.get('problems')}{context}"
    # Not one request beyond the file itself (data: images do not count, and none were blocked).
    assert result["external"] == [] and result["blocked"] == [], context
    assert all(u.startswith(("file:", "data:")) for u in result["requests"]), context
    assert result["consoleErrors"] == [] and result["pageErrors"] == [], context  # no CSP violation
    assert result["scripts"] == 0
    # Every figure in the file decoded, and it is every one.
    assert result["nImages"] == text.count("<img ") > 0, context
    for img in result["images"]:
        assert img["complete"] and img["naturalWidth"] > 0 and img["naturalHeight"] > 0, img
        assert img["scheme"] == "data", img
    # The metrics table as a reader sees it: the model and each baseline's PSNR.
    table = result["metricsTable"]
    assert "Model" in table, table
    assert f"{metrics['psnr']:.2f}" in table, table
    for b in ("gray", "const", "lookup"):
        if f"psnr_{b}" in metrics:
            assert b in table and f"{metrics[f'psnr_{b}']:.2f}" in table, (b, table)
    assert "strongest baseline" in table, table


def test_report_offline_in_chromium(browser_tools, tmp_path):
    reports = make_reports(tmp_path / "reports")
    page = report.write_report(reports)
    text = page.read_text(encoding="utf-8")
    result = open_in_chromium(page, tmp_path / "report.png")
    assert_offline_and_rendered(result, text, json.loads((reports / "metrics.json").read_text()))
    assert result["nImages"] == 8
    assert result["notAvailable"] == ["Not available: eval_best_median_worst.png not found."]
    assert result["sections"][:2] == ["Metrics on the test split", "Per class"]
    assert "SSIM" in result["metricsTable"] and "+7.20" in result["metricsTable"]


def test_the_check_sees_a_request(browser_tools, tmp_path):
    """The harness itself: a page that does fetch something (no CSP) is caught, and the
    request is aborted, not sent."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><table id="metrics-table"><tr><td>x</td></tr></table>'
                    '<img src="http://127.0.0.1:9/x.png" alt="remote"></body></html>')
    result = open_in_chromium(page)
    assert not result["ok"]
    assert result["external"] == ["http://127.0.0.1:9/x.png"] == result["blocked"], result
    assert result["images"][0]["naturalWidth"] == 0


def test_project_report_offline_in_chromium(browser_tools, tmp_path):
    """The report of this checkout's own reports/ (after `dvc repro`), written elsewhere."""
    reports = ROOT / "reports"
    if not (reports / "metrics.json").is_file():
        pytest.skip("no reports/metrics.json in this checkout: run `dvc repro` first")
    text = report.build_html(reports)
    page = tmp_path / "report.html"
    page.write_text(text, encoding="utf-8")
    print(f"\nreport of {reports}: {page.stat().st_size / 1e6:.2f} MB, {text.count('<img ')} images")
    result = open_in_chromium(page, tmp_path / "report.png")
    metrics = report.load_metrics(reports)
    assert_offline_and_rendered(result, text, metrics)
    assert "http://" not in text and "https://" not in text
