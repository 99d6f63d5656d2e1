"""The report: everything the pipeline measured, in one offline HTML file.

`write_report` reads the stages' reports in `reports/` and writes
`reports/report.html` (the report stage, colorize/stages/report.py): one self-contained file that opens from disk with no network.
Every image is a data: URI (base64 PNG), the CSS is inline, there is no JavaScript, and
a Content-Security-Policy meta tag forbids anything but data: images and the inline
style, so even an edited copy cannot fetch a font, a favicon or a script.

Deterministic: no timestamps, no versions, charts drawn with matplotlib's Agg at a fixed
size and dpi under the default style and saved without the "Software" PNG chunk, so the
same inputs give the same bytes.

Only `reports/metrics.json` is required (a one-line error without it); every other input
is optional and its section says "not available" when it is missing or unreadable. The
metric keys are read defensively: each known family (psnr, ssim, delta_e, colourfulness)
is shown for the model and each baseline when present, with its median and 95% CI when
those are present.

Sections: header (model, parameters, test images), metrics (model against each baseline,
the strongest highlighted, the gain), per class, plots (PSNR histogram, training curves,
temperature sweep), image grids, data and curation (split, counts per reason, garden
accuracy, relevance), colour priors.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from colorize.common import paths, tracking
from colorize.common.errors import UserError
from colorize.common.files import atomic_write

REPORTS = paths.REPORTS
OUTPUT_NAME = "report.html"

# Every file the report reads, relative to the reports folder (the DVC stage's deps).
METRICS = "metrics.json"
INPUTS_REQUIRED = (METRICS,)
INPUTS_OPTIONAL = (
    "eval_per_image.csv", "eval_per_class.csv", "psnr_hist.png", "eval_best_median_worst.png",
    "eval_grid.png", "temperature_sweep.csv", "train.json", "train_history.csv", "train_grid.png",
    "split.json", "curate.json", "curate_examples.png", "relevance.json",
    "priors.json", "priors_prior.png", "priors_weights.png",
)

DPI = 100  # every chart: fixed size in inches at this dpi
# (key, label, which way is better: "higher", "lower" or "truth" = closer to the truth's)
FAMILIES = (
    ("psnr", "PSNR (dB)", "higher"),
    ("ssim", "SSIM", "higher"),
    ("delta_e", "ΔE2000", "lower"),
    ("colourfulness", "Colourfulness", "truth"),
)
DECIMALS = {"psnr": 2, "ssim": 4, "delta_e": 2, "colourfulness": 1}
BASELINES = ("gray", "const", "lookup")
METHOD_LABELS = {
    "model": "Model",
    "gray": "gray (a = b = 0)",
    "const": "const (median ab)",
    "lookup": "lookup (median ab per L)",
}

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d8dde6; --bg-alt: #f5f7fa; --best: #fff4cc;
        --good: #1a7f37; --bad: #b42318; --accent: #2f5fb3; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0 auto; padding: 1.5rem 2rem 4rem; max-width: 1200px; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.25rem; margin: 2.4rem 0 .6rem; padding-bottom: .25rem; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.02rem; margin: 1.4rem 0 .4rem; }
p { margin: .4rem 0; }
nav { margin: .6rem 0 1rem; font-size: .92rem; }
nav a { color: var(--accent); text-decoration: none; margin-right: 1rem; }
.muted, .sub { color: var(--muted); }
.sub { display: block; font-size: .8rem; white-space: nowrap; }
.headline { font-size: 1.08rem; background: var(--bg-alt); border-left: 4px solid var(--accent);
            padding: .6rem .9rem; margin: 1rem 0; }
.na { color: var(--muted); font-style: italic; background: var(--bg-alt); padding: .35rem .7rem;
      border-radius: 4px; display: inline-block; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .92rem; }
th, td { border-bottom: 1px solid var(--line); padding: .35rem .7rem; text-align: right; vertical-align: top; }
th { background: var(--bg-alt); font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
tr.best td { background: var(--best); }
tr.gain td { font-weight: 600; border-top: 2px solid var(--fg); }
tr.zero td { color: var(--muted); }
.badge { display: inline-block; font-size: .72rem; font-weight: 600; background: #f0b400; color: #000;
         border-radius: 3px; padding: 0 .35rem; margin-left: .4rem; vertical-align: middle; }
.pos { color: var(--good); } .neg { color: var(--bad); }
.kv th { text-align: left; font-weight: 500; }
.cols { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.grids > div { flex: 1 1 0; min-width: 240px; }
figure { margin: .6rem 0 1.2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); display: block; }
figure img.zoom { image-rendering: pixelated; }
figcaption { color: var(--muted); font-size: .85rem; margin-top: .25rem; max-width: 60ch; }
"""


# ----------------------------------------------------------------------------- reading


class _Missing:
    """Why an optional input is not there (shown in its section)."""

    def __init__(self, why: str):
        self.why = why


def _read_json(path: Path) -> dict | _Missing:
    if not path.is_file():
        return _Missing(f"{path.name} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return _Missing(f"{path.name} unreadable ({type(e).__name__})")
    if not isinstance(data, dict):
        return _Missing(f"{path.name} is not a JSON object")
    return data


def _read_csv(path: Path) -> pd.DataFrame | _Missing:
    if not path.is_file():
        return _Missing(f"{path.name} not found")
    try:
        df = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:
        return _Missing(f"{path.name} unreadable ({type(e).__name__})")
    if df.empty:
        return _Missing(f"{path.name} has no rows")
    return df


def _read_image(path: Path) -> bytes | _Missing:
    """The file's PNG bytes as they are (re-encoded only if it is another format)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return _Missing(f"{path.name} not found")
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.format == "PNG":
                return data
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            return buf.getvalue()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        return _Missing(f"{path.name} unreadable ({type(e).__name__})")


def load_metrics(reports_dir: Path) -> dict:
    """metrics.json, the one required input: a UserError (one line) when missing or bad."""
    path = Path(reports_dir) / METRICS
    data = _read_json(path)
    if isinstance(data, _Missing):
        hint = "; run `dvc repro evaluate` first" if not path.is_file() else ""
        raise UserError(f"report: {path}: {data.why.removeprefix(path.name + ' ')}{hint}")
    return data


# ----------------------------------------------------------------------------- formatting


def _num(x: Any) -> float | None:
    """A finite float, or None for anything else (missing, NaN, text, bool)."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt(x: Any, decimals: int | None = None, sign: bool = False) -> str:
    """Numbers for people: ints with thousands separators, floats with `decimals` (or a
    precision chosen by magnitude), '–' for missing; text escaped."""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):+,}" if sign else f"{int(x):,}"
    v = _num(x)
    if v is None:
        return "–" if x is None or isinstance(x, (float, np.floating)) else html.escape(str(x))
    if decimals is None:
        if v == int(v) and abs(v) < 1e15 and not isinstance(x, (float, np.floating)):
            return f"{int(v):,}"
        a = abs(v)
        decimals = 0 if a >= 1000 else 2 if a >= 10 else 3 if a >= 0.01 or a == 0 else 5
    s = f"{v:+,.{decimals}f}" if sign else f"{v:,.{decimals}f}"
    return s.replace("-", "−")


def _ci(value: Any) -> tuple[float, float] | None:
    """A 95% CI as metrics.json may hold it: [lo, hi] or {"lo": .., "hi": ..}."""
    if isinstance(value, dict):
        value = [value.get("lo", value.get("low")), value.get("hi", value.get("high"))]
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = _num(value[0]), _num(value[1])
        if lo is not None and hi is not None:
            return lo, hi
    return None


def _e(text: Any) -> str:
    return html.escape(str(text))


def _na(why: str) -> str:
    return f'<p class="na">Not available: {_e(why)}.</p>'


def _kv_table(rows: Iterable[tuple[str, Any]], cls: str = "kv") -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v if isinstance(v, _Html) else _fmt(v)}</td></tr>" for k, v in rows)
    return f'<table class="{cls}"><tbody>{body}</tbody></table>'


class _Html(str):
    """Already-escaped markup (passes through _kv_table untouched)."""


def _table(header: list[str], rows: list[list[str]], row_classes: list[str] | None = None,
           table_id: str | None = None) -> str:
    """Cells are markup already (escaped by the caller)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = (row_classes or [""] * len(rows))[i]
        attr = f' class="{cls}"' if cls else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _frame_table(df: pd.DataFrame, table_id: str | None = None) -> str:
    """Any data frame as a table, each number formatted by its magnitude, text escaped."""
    rows = []
    for rec in df.itertuples(index=False):
        rows.append([_fmt(v) if not isinstance(v, str) else _e(v) for v in rec])
    return _table([_e(c) for c in df.columns], rows, table_id=table_id)


MIN_SHOWN_WIDTH = 480  # px; smaller images (the 64-px image grids) are shown enlarged, pixelated


def _figure(png: bytes, alt: str, caption: str = "") -> str:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        width, height = im.size
    zoom = max(1, MIN_SHOWN_WIDTH // max(width, 1))
    cls = ' class="zoom"' if zoom > 1 else ""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return (f'<figure><img{cls} src="{uri}" alt="{_e(alt)}" width="{width * zoom}" height="{height * zoom}">'
            f"{cap}</figure>")


def _image_or_na(reports_dir: Path, name: str, alt: str, caption: str = "") -> str:
    png = _read_image(reports_dir / name)
    return _na(png.why) if isinstance(png, _Missing) else _figure(png, alt, caption)


# ----------------------------------------------------------------------------- charts


def _chart(draw: Callable[[Any], None], size: tuple[float, float]) -> bytes:
    """A PNG drawn by `draw(fig)` on a bare Agg figure, under matplotlib's default style
    (whatever matplotlibrc says), at a fixed size and dpi, without the version chunk."""
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):
        fig = Figure(figsize=size, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def psnr_histogram_png(per_image: pd.DataFrame, best: str) -> bytes | None:
    """Per-image PSNR, model against the strongest baseline (None without the columns)."""
    cols = [c for c in (f"psnr_{best}", "psnr_model") if c in per_image.columns]
    values = {c: pd.to_numeric(per_image[c], errors="coerce").dropna().to_numpy(float) for c in cols}
    values = {c: v for c, v in values.items() if len(v)}
    if not values:
        return None
    everything = np.concatenate(list(values.values()))
    lo, hi = float(np.floor(everything.min())), float(np.ceil(everything.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)

    def draw(fig):
        ax = fig.subplots()
        for (c, v), colour in zip(values.items(), ("tab:gray", "tab:blue")):
            name = "model" if c == "psnr_model" else f"{best} baseline"
            ax.hist(v, bins=bins, alpha=0.6, color=colour, label=f"{name} (mean {v.mean():.2f} dB)")
            ax.axvline(v.mean(), color=colour, linestyle="--", linewidth=1)
        ax.set_xlabel("PSNR per test image (dB)")
        ax.set_ylabel("images")
        ax.legend(fontsize=8)

    return _chart(draw, (6.0, 3.2))


def training_curves_png(history: pd.DataFrame) -> bytes | None:
    """Loss, validation PSNR, learning rate (and the critic's Wasserstein estimate) per epoch."""
    if "epoch" in history.columns:
        x = pd.to_numeric(history["epoch"], errors="coerce")
    else:
        x = pd.Series(np.arange(1, len(history) + 1))
    def has(c: str) -> bool:  # a column with at least one number (a gan's critic columns
        # are NaN in the epochs before the adversarial loss starts, and absent otherwise)
        return c in history.columns and pd.to_numeric(history[c], errors="coerce").notna().any()

    panels = [
        ("loss", [c for c in ("train_loss", "val_loss") if has(c)]),
        ("validation PSNR (dB)", [c for c in ("val_psnr",) if has(c)]),
        ("learning rate", [c for c in ("lr",) if has(c)]),
        ("GAN critic", [c for c in ("critic_wasserstein", "gradient_penalty") if has(c)]),
    ]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None

    def draw(fig):
        from matplotlib.ticker import MaxNLocator

        axes = np.atleast_1d(fig.subplots(1, len(panels)))
        for ax, (title, cols) in zip(axes, panels):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            for c in cols:
                ax.plot(x, pd.to_numeric(history[c], errors="coerce"), marker="o", markersize=3, label=c)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if len(cols) > 1:
                ax.legend(fontsize=8)
            if title == "learning rate":
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

    return _chart(draw, (3.0 * len(panels) + 0.4, 2.9))


def temperature_sweep_png(sweep: pd.DataFrame) -> bytes | None:
    """PSNR and colourfulness against the annealed-mean temperature."""
    if "temperature" not in sweep.columns:
        return None
    t = pd.to_numeric(sweep["temperature"], errors="coerce")
    panels = [
        ("PSNR (dB)", [c for c in ("psnr", "psnr_gray") if c in sweep.columns]),
        ("colourfulness", [c for c in ("colourfulness", "colourfulness_truth") if c in sweep.columns]),
    ]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None

    def draw(fig):
        axes = np.atleast_1d(fig.subplots(1, len(panels)))
        for ax, (title, cols) in zip(axes, panels):
            for c in cols:
                reference = c in ("psnr_gray", "colourfulness_truth")
                ax.plot(t, pd.to_numeric(sweep[c], errors="coerce"), marker="" if reference else "o",
                        markersize=3, linestyle="--" if reference else "-", label=c)
            if (t > 0).all():
                ax.set_xscale("log")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("temperature T")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)

    return _chart(draw, (3.4 * len(panels) + 0.4, 2.9))


# ----------------------------------------------------------------------------- sections


def _methods(metrics: dict) -> list[str]:
    """The model, then every baseline with at least one number in metrics.json."""
    extra = metrics.get("best_baseline")
    known = list(BASELINES) + ([extra] if isinstance(extra, str) and extra not in BASELINES else [])
    present = [b for b in known if any(_num(metrics.get(f"{fam}_{b}")) is not None for fam, _, _ in FAMILIES)]
    return ["model"] + present


def _key(family: str, method: str) -> str:
    return family if method == "model" else f"{family}_{method}"


def _best_baseline(metrics: dict, methods: list[str]) -> str | None:
    best = metrics.get("best_baseline")
    if isinstance(best, str) and best in methods:
        return best
    scored = [(m, _num(metrics.get(f"psnr_{m}"))) for m in methods if m != "model"]
    scored = [(m, v) for m, v in scored if v is not None]
    return max(scored, key=lambda mv: mv[1])[0] if scored else None


def _cell(metrics: dict, family: str, method: str) -> str:
    key, d = _key(family, method), DECIMALS[family]
    mean = _num(metrics.get(key))
    if mean is None:
        return "–"
    parts = []
    median = _num(metrics.get(f"{key}_median"))
    if median is not None:
        parts.append(f"median {_fmt(median, d)}")
    ci = _ci(metrics.get(f"{key}_ci95", [metrics.get(f"{key}_ci95_lo"), metrics.get(f"{key}_ci95_hi")]))
    if ci:
        parts.append(f"95% CI [{_fmt(ci[0], d)}, {_fmt(ci[1], d)}]")
    sub = f'<span class="sub">{" · ".join(parts)}</span>' if parts else ""
    return f"{_fmt(mean, d)}{sub}"


def _gain_cell(metrics: dict, family: str, best: str, direction: str) -> str:
    model, base = _num(metrics.get(family)), _num(metrics.get(f"{family}_{best}"))
    if model is None or base is None:
        return "–"
    d = DECIMALS[family]
    gain = model - base
    if family == "psnr" and _num(metrics.get("gain_over_best_baseline")) is not None:
        gain = _num(metrics["gain_over_best_baseline"])
    if direction == "truth":
        truth = _num(metrics.get("colourfulness_truth"))
        better = None if truth is None else abs(model - truth) < abs(base - truth)
    else:
        better = gain > 0 if direction == "higher" else gain < 0
    cls = "" if better is None or gain == 0 else (' class="pos"' if better else ' class="neg"')
    sub = ""
    ci = _ci(metrics.get("gain_over_best_baseline_ci95", [metrics.get("gain_ci95_lo"), metrics.get("gain_ci95_hi")])) if family == "psnr" else None
    if ci:
        sub = f'<span class="sub">95% CI [{_fmt(ci[0], d, sign=True)}, {_fmt(ci[1], d, sign=True)}]</span>'
    return f"<span{cls}>{_fmt(gain, d, sign=True)}</span>{sub}"


def section_header(metrics: dict, train: dict | _Missing, history: pd.DataFrame | _Missing) -> str:
    model = train.get("model") if isinstance(train, dict) else None
    facts = []
    if isinstance(train, dict):
        if _num(train.get("n_params")) is not None:
            facts.append(("parameters", int(train["n_params"])))
        if isinstance(history, pd.DataFrame):
            facts.append(("epochs", len(history)))
        if _num(train.get("seconds_per_epoch")) is not None:
            facts.append(("seconds per epoch", _Html(_fmt(train["seconds_per_epoch"], 2))))
        if _num(train.get("val_psnr")) is not None:
            facts.append(("validation PSNR (dB)", _Html(_fmt(train["val_psnr"], 2))))
        if _num(train.get("world_size")) is not None and int(train["world_size"]) > 1:
            facts.append(("training processes", int(train["world_size"])))
    if _num(metrics.get("n_test")) is not None:
        facts.append(("test images", int(metrics["n_test"])))
    title = f"Colorization report: {_e(model)}" if model else "Colorization report"
    lines = [f"<h1>{title}</h1>",
             '<p class="muted">Built from the pipeline\'s reports/ by <code>python -m colorize.stages.report</code>; '
             "the same inputs give the same file.</p>"]
    if not isinstance(train, dict):
        lines.append(_na(f"training summary: {train.why}"))
    if facts:
        lines.append(_kv_table(facts))
    return "\n".join(lines)


def section_metrics(metrics: dict) -> str:
    methods = _methods(metrics)
    families = [f for f in FAMILIES if any(_num(metrics.get(_key(f[0], m))) is not None for m in methods)]
    out = ['<h2 id="metrics">Metrics on the test split</h2>']
    if not families:
        return "\n".join(out + [_na("metrics.json holds none of psnr, ssim, delta_e, colourfulness")])
    best = _best_baseline(metrics, methods)
    arrows = {"higher": " ↑", "lower": " ↓", "truth": ""}
    header = ["Method"] + [f"{_e(label)}{arrows[way]}" for _, label, way in families]
    rows, classes = [], []
    for m in methods:
        name = _e(METHOD_LABELS.get(m, m))
        if m == best:
            name += '<span class="badge">strongest baseline</span>'
        rows.append([name] + [_cell(metrics, fam, m) for fam, _, _ in families])
        classes.append("best" if m == best else "model" if m == "model" else "")
    truth = _num(metrics.get("colourfulness_truth"))
    if truth is not None and any(f[0] == "colourfulness" for f in families):
        rows.append(["ground truth"] + [_cell(metrics, "colourfulness", "truth") if f == "colourfulness" else "–"
                                        for f, _, _ in families])
        classes.append("")
    if best:
        rows.append([f"Model − {_e(best)}"] + [_gain_cell(metrics, fam, best, way) for fam, _, way in families])
        classes.append("gain")
    out.append(_headline(metrics, best))
    out.append(_table(header, rows, classes, table_id="metrics-table"))
    out.append('<p class="muted">Means over the test images; below each, the median and the 95% bootstrap '
               "CI of the mean where evaluate wrote them. ↑ higher is better, ↓ lower is better; colourfulness "
               "is best close to the ground truth's. The strongest baseline is the one with the highest mean "
               "PSNR; the last row is the model minus it.</p>")
    extra = [(f"perfect images ({METHOD_LABELS.get(m, m).split(' ')[0]})", metrics[f"n_perfect_{m}"])
             for m in methods if _num(metrics.get(f"n_perfect_{m}")) is not None]
    if _num(metrics.get("colourfulness_gap")) is not None:
        extra.append(("colourfulness gap (model − truth)", _Html(_fmt(metrics["colourfulness_gap"], 1, sign=True))))
    if extra:
        out.append(_kv_table(extra))
    return "\n".join(out)


def _headline(metrics: dict, best: str | None) -> str:
    model, base = _num(metrics.get("psnr")), _num(metrics.get(f"psnr_{best}")) if best else None
    if model is None or base is None:
        return ""
    gain = _num(metrics.get("gain_over_best_baseline"))
    gain = model - base if gain is None else gain
    ci = _ci(metrics.get("gain_over_best_baseline_ci95", [metrics.get("gain_ci95_lo"), metrics.get("gain_ci95_hi")]))
    ci_text = f" (95% CI [{_fmt(ci[0], 2, sign=True)}, {_fmt(ci[1], 2, sign=True)}] dB)" if ci else ""
    verdict = "beats" if gain > 0 else "does not beat"
    ratio = _num(metrics.get("colourfulness_ratio"))
    colour = (f" Its colours are <b>{_fmt(ratio, 2)}×</b> as colourful as the truth's "
              f"({_fmt(metrics.get('colourfulness'), 1)} against {_fmt(metrics.get('colourfulness_truth'), 1)})."
              if ratio is not None else "")
    return (f'<p class="headline">The model ({_fmt(model, 2)} dB) {verdict} the strongest baseline, '
            f"<b>{_e(best)}</b> ({_fmt(base, 2)} dB), by <b>{_fmt(gain, 2, sign=True)} dB</b> PSNR{ci_text}."
            f"{colour}</p>")


def section_per_class(reports_dir: Path) -> str:
    out = ['<h2 id="per-class">Per class</h2>']
    df = _read_csv(reports_dir / "eval_per_class.csv")
    if isinstance(df, _Missing):
        return "\n".join(out + [_na(df.why)])
    out.append('<p class="muted">Mean per label on the test split (from eval_per_class.csv).</p>')
    out.append(_frame_table(df, table_id="per-class-table"))
    return "\n".join(out)


def section_plots(reports_dir: Path, metrics: dict) -> str:
    out = ['<h2 id="plots">Plots</h2>', "<h3>PSNR per test image</h3>"]
    hist = _read_image(reports_dir / "psnr_hist.png")
    if not isinstance(hist, _Missing):
        out.append(_figure(hist, "PSNR histogram", "Per-image PSNR, model against the strongest baseline."))
    else:
        per_image = _read_csv(reports_dir / "eval_per_image.csv")
        best = _best_baseline(metrics, _methods(metrics))
        if best is None and isinstance(per_image, pd.DataFrame):
            means = {b: pd.to_numeric(per_image[f"psnr_{b}"], errors="coerce").mean()
                     for b in BASELINES if f"psnr_{b}" in per_image.columns}
            best = max(means, key=means.get) if means else None
        png = (psnr_histogram_png(per_image, best or "const")
               if isinstance(per_image, pd.DataFrame) else None)
        if png:
            out.append(_figure(png, "PSNR histogram",
                               f"Per-image PSNR, model against the strongest baseline ({best}); dashed: means."))
        else:
            why = per_image.why if isinstance(per_image, _Missing) else "eval_per_image.csv has no PSNR columns"
            out.append(_na(why))

    out.append("<h3>Training curves</h3>")
    history = _read_csv(reports_dir / "train_history.csv")
    png = training_curves_png(history) if isinstance(history, pd.DataFrame) else None
    if png:
        out.append(_figure(png, "training curves", "Per epoch, from train_history.csv."))
    else:
        out.append(_na(history.why if isinstance(history, _Missing) else "train_history.csv has no known columns"))

    out.append("<h3>Temperature sweep</h3>")
    sweep = _read_csv(reports_dir / "temperature_sweep.csv")
    png = temperature_sweep_png(sweep) if isinstance(sweep, pd.DataFrame) else None
    if png:
        flat = "psnr" in sweep.columns and pd.to_numeric(sweep["psnr"], errors="coerce").nunique() == 1
        note = " The model's output does not depend on T (only a model that predicts a colour " \
               "distribution, zhang, decodes with a temperature)." if flat else ""
        out.append(_figure(png, "temperature sweep",
                           "PSNR and colourfulness against the annealed-mean temperature T; "
                           "dashed: gray baseline and ground truth." + note))
    else:
        out.append(_na(sweep.why if isinstance(sweep, _Missing) else "temperature_sweep.csv has no known columns"))
    return "\n".join(out)


def section_grids(reports_dir: Path) -> str:
    grids = (
        ("Test split", "eval_grid.png", "test grid", "Test images: gray input | prediction | truth."),
        ("Best, median and worst by PSNR", "eval_best_median_worst.png", "best, median and worst test images",
         "The model's best, median and worst test images: gray input | prediction | truth."),
        ("Validation during training", "train_grid.png", "training grid",
         "Validation images after the last epoch: gray input | prediction | truth."),
    )
    blocks = [f"<div><h3>{_e(title)}</h3>{_image_or_na(reports_dir, name, alt, caption)}</div>"
              for title, name, alt, caption in grids]
    return '<h2 id="grids">Image grids</h2>\n<div class="cols grids">' + "\n".join(blocks) + "</div>"


def section_curation(reports_dir: Path) -> str:
    out = ['<h2 id="data">Data and curation</h2>', "<h3>Split</h3>"]
    split = _read_json(reports_dir / "split.json")
    if isinstance(split, _Missing):
        out.append(_na(split.why))
    else:
        out.append(_kv_table([(k, v) for k, v in split.items() if _num(v) is not None]))

    out.append("<h3>Curation</h3>")
    curate = _read_json(reports_dir / "curate.json")
    if isinstance(curate, _Missing):
        out.append(_na(curate.why))
    else:
        counts = [(k.replace("_", " "), curate[k]) for k in ("found", "kept", "dropped", "human_decisions")
                  if k in curate]
        blocks = [_kv_table(counts)] if counts else []
        by_reason = curate.get("by_reason")
        if isinstance(by_reason, dict) and by_reason:
            found = _num(curate.get("found"))
            rows, classes = [], []
            for reason, n in by_reason.items():
                share = f"{100 * _num(n) / found:.1f}%" if found and _num(n) is not None else "–"
                rows.append([_e(reason), _fmt(n), share])
                classes.append("zero" if _num(n) == 0 else "")
            blocks.append(_table(["dropped because", "files", "of found"], rows, classes, table_id="reasons-table"))
        out.append(f'<div class="cols">{"".join(blocks)}</div>')
        accuracy = curate.get("garden_accuracy")
        if isinstance(accuracy, dict) and accuracy:
            out.append("<h3>Checks against the garden's planted defects</h3>")
            out.append(_accuracy_table(accuracy))
        else:
            out.append(_na("curate.json has no garden_accuracy (no garden source)"))
    out.append(_image_or_na(reports_dir, "curate_examples.png", "curation examples",
                            "Examples of each reason a file was dropped."))

    out.append("<h3>Relevance classifier</h3>")
    relevance = _read_json(reports_dir / "relevance.json")
    if isinstance(relevance, _Missing):
        out.append(_na(relevance.why))
    else:
        labels = {"auc": "AUC (held out)", "precision": "precision at threshold", "recall": "recall at threshold"}
        rows = [(labels.get(k, k.replace("_", " ")), _Html(_fmt(v, 3)) if isinstance(v, float) else v)
                for k, v in relevance.items()
                if isinstance(v, (int, float, str)) and not (isinstance(v, str) and not v)]
        out.append(_kv_table(rows))
    return "\n".join(out)


def _accuracy_table(accuracy: dict) -> str:
    columns: list[str] = []
    for stats in accuracy.values():
        if isinstance(stats, dict):
            columns += [k for k in stats if k not in columns]
    rows = []
    for check, stats in accuracy.items():
        stats = stats if isinstance(stats, dict) else {}
        rows.append([_e(check)] + [_fmt(stats[c], 3) if isinstance(stats.get(c), float) else _fmt(stats.get(c))
                                   for c in columns])
    return _table(["check"] + [_e(c.replace("_", " ")) for c in columns], rows, table_id="accuracy-table")


def section_priors(reports_dir: Path) -> str:
    out = ['<h2 id="priors">Colour priors (training split)</h2>']
    priors = _read_json(reports_dir / "priors.json")
    if isinstance(priors, _Missing):
        out.append(_na(priors.why))
    else:
        scalars = [(k.replace("_", " "), _Html(_fmt(v, 3)) if isinstance(v, float) else v)
                   for k, v in priors.items() if _num(v) is not None]
        blocks = [_kv_table(scalars)] if scalars else []
        top = priors.get("top_bins")
        if isinstance(top, list) and top and all(isinstance(t, dict) for t in top):
            rows = [[_fmt(t.get("a"), 0), _fmt(t.get("b"), 0),
                     f"{100 * _num(t.get('share')):.1f}%" if _num(t.get("share")) is not None else "–"]
                    for t in top]
            blocks.append("<div><p class=\"muted\">Most frequent ab bins</p>"
                          + _table(["a", "b", "share of pixels"], rows) + "</div>")
        out.append(f'<div class="cols">{"".join(blocks)}</div>')
    out.append('<div class="cols">')
    out.append(_image_or_na(reports_dir, "priors_prior.png", "ab prior", "The ab prior (log10 share of pixels)."))
    out.append(_image_or_na(reports_dir, "priors_weights.png", "rebalancing weights", "Class-rebalancing weights."))
    out.append("</div>")
    return "\n".join(out)


# ----------------------------------------------------------------------------- the page


NAV = (("metrics", "Metrics"), ("per-class", "Per class"), ("plots", "Plots"), ("grids", "Grids"),
       ("data", "Data and curation"), ("priors", "Priors"))


def build_html(reports_dir: Path | str = REPORTS) -> str:
    """The whole report as one HTML string; raises UserError without metrics.json."""
    reports_dir = Path(reports_dir)
    metrics = load_metrics(reports_dir)
    train = _read_json(reports_dir / "train.json")
    history = _read_csv(reports_dir / "train_history.csv")
    title = "Colorization report" + (f": {train['model']}" if isinstance(train, dict) and train.get("model") else "")
    nav = "<nav>" + "".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in NAV) + "</nav>"
    body = "\n".join([
        section_header(metrics, train, history),
        nav,
        section_metrics(metrics),
        section_per_class(reports_dir),
        section_plots(reports_dir, metrics),
        section_grids(reports_dir),
        section_curation(reports_dir),
        section_priors(reports_dir),
    ])
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def write_report(reports_dir: Path | str = REPORTS, out: Path | str | None = None) -> Path:
    """Build and write the report (atomically); returns its path."""
    reports_dir = Path(reports_dir)
    out = Path(out) if out is not None else reports_dir / OUTPUT_NAME
    data = build_html(reports_dir).encode("utf-8")
    return atomic_write(out, lambda tmp: tmp.write_bytes(data))


def log_to_training_run(reports_dir: Path, out: Path) -> None:
    """Attach the report to the MLflow run the train stage made (train.json names it)."""
    try:
        run_id = json.loads((reports_dir / "train.json").read_text()).get("mlflow_run_id")
    except (OSError, ValueError):
        run_id = None
    if not run_id:
        print("report: no training run in train.json; not logged to MLflow")
        return
    mlflow = tracking.setup()
    try:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_artifact(str(out))
    except mlflow.exceptions.MlflowException as e:
        print(f"report: training run {run_id} not found ({str(e).splitlines()[0]}); not logged to MLflow")
