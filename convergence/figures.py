"""Figures of a sweep analysis: error against steps T and against score evaluations (NFE).

One pair of log-log figures per (target, process, metric) and run setting (perturbation, init,
t_end, final noise, denoise, noise kind; non-default settings add a suffix to the file name):

* the points e(T) (mean over seeds) with error bars of +- z se (z the normal quantile of the
  analysis' confidence; exact evaluators have invisible bars) -- hollow markers for points below
  10x the evaluator's floor, which no fit uses;
* the fitted line exp(a) T^slope over its window, the slope and its CI in the legend
  ("ddim: slope -1.00 [-1.01, -0.99]");
* reference slope triangles for the expected orders of the samplers shown (solid) and for the
  claimed bounds in this metric that differ from them (dashed), placed where the axes hold no
  data (THEORY.md section 5, "Recommended presentation").

Every sampler keeps one colour and marker in every figure: a fixed map from the sorted registry
names. Figures are sized for one paper column (3.4 x 2.6 inches, 8 pt text) and drawn with the
Agg canvas through ``matplotlib.figure.Figure`` (no pyplot, no window, no global state; rc
settings only inside ``matplotlib.rc_context``).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator
from scipy import stats

from convergence.analysis import Analysis, CurveFit, CurveKey, _resolved

FIGSIZE = (3.4, 2.6)  # inches: one column of a two-column paper
STYLE = {
    "font.size": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 7,
    "font.family": "serif",
    "font.serif": ["STIXGeneral", "DejaVu Serif"],
    "mathtext.fontset": "stix",
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "lines.linewidth": 1.0,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "legend.handlelength": 1.6,
    "pdf.fonttype": 42,
    "savefig.dpi": 300,
}
METRIC_LABELS = {
    "kl": "KL divergence",
    "w2": "$W_2$ distance",
    "tv": "total variation distance",
    "hellinger": "Hellinger distance",
    "weak": "weak error",
    "sinkhorn": "Sinkhorn divergence",
    "sliced-w2": "sliced $W_2$ distance",
    "mmd": "MMD",
}
AXES = {"T": "steps $T$", "NFE": "score evaluations (NFE)"}
# Colour i and colour i + 10 share a marker: they are chosen to contrast.
_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
    "#000000",
    "#393b79",
    "#7b4173",
    "#006d5b",
    "#8c6d31",
    "#3182bd",
    "#637939",
)
_MARKERS = ("o", "s", "^", "v", "D", "<", ">", "p", "h", "*")


def sampler_style(name: str) -> tuple[str, str, bool]:
    """(colour, marker, filled) of a sampler: index i of its name among the sorted registry names
    gives colour i mod 17, marker i mod 10, filled for (i // 10) even and open otherwise, so the
    17 registered samplers differ in colour AND in marker or fill. Unregistered names get
    i = 17 + (a stable hash of the name mod 151)."""
    from convergence.samplers import REGISTRY

    names = sorted(REGISTRY)
    i = names.index(name) if name in names else len(names) + sum(name.encode()) % 151
    return _COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)], (i // len(_MARKERS)) % 2 == 0


def _slug(text: str) -> str:
    """File-name-safe text: runs of characters other than letters, digits, '.', '+', '-' become
    one '-'."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")


def _figure_key(key: CurveKey) -> CurveKey:
    return replace(key, sampler="*", options="{}", evaluator="*", n=0)


def _file_stem(key: CurveKey, axis: str) -> str:
    stem = f"{key.metric}_vs_{axis}_{_slug(key.target)}_{key.process}"
    extra = [key.perturbation or "", key.setting()]
    suffix = _slug("_".join(e for e in extra if e))
    return f"{stem}_{suffix}" if suffix else stem


def _legend_label(curve: CurveFit, others: Sequence[CurveFit]) -> str:
    label = curve.label
    if sum(c.label == label for c in others) > 1:  # same sampler at several n / evaluators
        label += f" [{curve.key.evaluator}, n={curve.key.n}]"
    if curve.fit is None or math.isnan(curve.slope):
        return f"{label}: no fit"
    return f"{label}: slope {curve.slope:.2f} [{curve.ci_low:.2f}, {curve.ci_high:.2f}]"


def _reference_slopes(curves: Sequence[CurveFit]) -> list[tuple[float, bool]]:
    """Distinct |slopes| to draw as triangles: (value, is an expected order); claimed bounds
    equal to an expected order are drawn once, as expected."""
    expected = {round(-c.expected_slope, 6) for c in curves if c.expected_slope is not None}
    claimed = {round(b.exponent, 6) for c in curves for b in c.bounds}
    return sorted([(v, True) for v in expected] + [(v, False) for v in claimed - expected])


def _draw_curve(ax, curve: CurveFit, axis: str, z: float, label: str, style: dict) -> np.ndarray:
    """Points with error bars and the fitted line; returns the drawn points in data units."""
    color, marker = style["color"], style["marker"]
    fill = color if style["filled"] else "white"
    e = np.asarray(curve.errors)
    half = z * np.asarray(curve.std_errors)
    x = np.asarray(curve.steps if axis == "T" else curve.nfe, dtype=np.float64)
    good = np.isfinite(e) & (e > 0) & np.isfinite(x) & (x > 0)
    resolved = _resolved(curve, e) & good
    lower = np.minimum(half, 0.9 * e)  # a bar reaching 0 cannot be drawn on a log axis
    for mask, alpha in ((resolved, 1.0), (good & ~resolved, 0.35)):
        if mask.any():
            ax.errorbar(
                x[mask],
                e[mask],
                yerr=np.vstack([lower[mask], half[mask]]),
                fmt=marker,
                color=color,
                mfc=fill,
                alpha=alpha,
                mew=0.7,
                ms=3.5,
                elinewidth=0.6,
                capsize=1.5,
                capthick=0.6,
                linestyle="none",
                zorder=3,
            )
    fit = curve.fit
    if fit is not None and math.isfinite(curve.slope):
        i0, i1 = fit.window_indices
        t = np.geomspace(fit.window[0], fit.window[1], 50)
        y = np.exp(fit.intercept) * t**fit.slope
        if axis == "NFE":
            ratio = np.nanmedian(np.asarray(curve.nfe[i0 : i1 + 1]) / curve.steps[i0 : i1 + 1])
            t = t * ratio
        ax.plot(t, y, color=color, lw=1.1, ls=style["ls"], alpha=0.9, zorder=2)
        x, e = np.concatenate([x, t]), np.concatenate([e, y])  # the line counts as data
        good = np.concatenate([good, np.ones(t.size, dtype=bool)])
    # legend handle: marker and line together
    style["handle"] = Line2D(
        [], [], color=color, marker=marker, mfc=fill, mew=0.7, ms=3.5, lw=1.1, ls=style["ls"]
    )
    style["label"] = label
    return np.column_stack([x[good], e[good]])


def _to_axes(ax, pts: np.ndarray) -> np.ndarray:
    """Data points (x, y) -> axes fractions on the log-log axes."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    fx = (np.log(pts[:, 0]) - math.log(x0)) / (math.log(x1) - math.log(x0))
    fy = (np.log(pts[:, 1]) - math.log(y0)) / (math.log(y1) - math.log(y0))
    return np.column_stack([fx, fy])


def _count_inside(frac: np.ndarray, box: tuple[float, float, float, float]) -> int:
    """Number of points (axes fractions) inside box = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    inside = (frac[:, 0] > x0) & (frac[:, 0] < x1) & (frac[:, 1] > y0) & (frac[:, 1] < y1)
    return int(inside.sum())


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


_LEGEND_CORNERS = {  # loc -> anchor of the legend box in axes fractions (pad 0.02)
    "upper right": (1, 1),
    "lower left": (0, 0),
    "upper left": (0, 1),
    "lower right": (1, 0),
}


def _place_legend(
    fig: Figure, ax, handles, labels, frac: np.ndarray, pct: str
) -> tuple[float, ...]:
    """Put the legend in the corner of the axes whose box covers no data point (preference
    order of ``_LEGEND_CORNERS``); if every corner covers data, put it under the axes (two
    columns if they fit the width, the word "slope" moved to the legend title) and make the
    figure taller by its height, so the axes keep their size. Returns the legend's box in axes
    fractions (an empty box when it is outside)."""
    legend = ax.legend(handles, labels, loc="upper right", borderaxespad=0.4)
    fig.draw_without_rendering()
    bb = legend.get_window_extent().transformed(ax.transAxes.inverted())
    w, h, pad = bb.width, bb.height, 1.0 - bb.x1
    for loc, (cx, cy) in _LEGEND_CORNERS.items():
        x0 = pad if cx == 0 else 1.0 - pad - w
        y0 = pad if cy == 0 else 1.0 - pad - h
        box = (x0, y0, x0 + w, y0 + h)
        if _count_inside(frac, box) == 0:
            legend.set_loc(loc)
            return box
    legend.remove()
    short = [label.replace(": slope ", ": ") for label in labels]
    title = f"fitted slope [{pct} CI]"
    for ncols in (2, 1):
        below = fig.legend(
            handles,
            short,
            loc="outside lower center",
            ncols=ncols,
            columnspacing=1.0,
            title=title,
            title_fontsize=7,
        )
        fig.draw_without_rendering()
        if below.get_window_extent().width <= 0.98 * FIGSIZE[0] * fig.dpi or ncols == 1:
            break
        below.remove()
    height = below.get_window_extent().height / fig.dpi
    fig.set_size_inches(FIGSIZE[0], FIGSIZE[1] + height)
    return (0.0, 0.0, 0.0, 0.0)


def _triangle_sizes(ax, slopes) -> list[tuple[float, float]]:
    """(width, height) in axes fractions of each triangle: a horizontal leg along log T and a
    vertical leg |s| times as long in log-error units; the width is adjusted so the height stays
    within [0.06, 0.28] of the axes (and the width within [0.06, 0.25])."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    aspect = math.log(x1 / x0) / math.log(y1 / y0)  # axes-fraction height per unit slope
    out = []
    for s, _ in slopes:
        w = 0.1
        h = s * w * aspect
        if h > 0.28:
            w = max(0.06, w * 0.28 / h)
        elif h < 0.06:
            w = min(0.25, w * 0.06 / h)
        out.append((w, s * w * aspect))
    return out


def _place_triangles(ax, slopes, frac: np.ndarray, legend_box) -> None:
    """Draw the reference triangles side by side where they cover the fewest data points and
    miss the legend (a grid search over positions in axes fractions; ties go to the lower left).
    Each is labelled "1" under its horizontal leg and |s| left of its vertical leg."""
    if not slopes:
        return
    sizes = _triangle_sizes(ax, slopes)
    gap = 0.08
    block_w = sum(w for w, _ in sizes) + gap * (len(sizes) - 1)
    block_h = max(h for _, h in sizes)
    best = None
    for bx in np.linspace(0.1, max(0.1, 0.97 - block_w), 15):
        for by in np.linspace(0.07, max(0.07, 0.95 - block_h), 15):
            # the box includes the labels: "1" below, the slope text on the left
            box = (bx - 0.08, by - 0.07, bx + block_w + 0.02, by + block_h + 0.03)
            score = (
                _overlap(box, legend_box),
                _count_inside(frac, box),
                round(bx + by, 6),
            )
            if best is None or score < best[0]:
                best = (score, bx, by)
    _, bx, by = best
    to_data = ax.transAxes + ax.transData.inverted()
    x = bx
    for (s, expected), (w, h) in zip(slopes, sizes, strict=True):
        corners = np.array([[x, by + h], [x, by], [x + w, by], [x, by + h]])
        xy = to_data.transform(corners)
        ls = "-" if expected else (0, (3, 2))
        ax.plot(xy[:, 0], xy[:, 1], color="0.3", lw=0.7, ls=ls, zorder=1)
        text = dict(transform=ax.transAxes, fontsize=7, color="0.2")
        ax.text(x + w / 2, by - 0.015, "1", ha="center", va="top", **text)
        ax.text(x - 0.012, by + h / 2, f"{s:g}", ha="right", va="center", **text)
        x += w + gap


def _step_ticks(ax, xs: set[float], most: int = 9) -> None:
    """Label the x axis at the measured step counts / NFE (plain integers) when there are at
    most ``most`` of them and they are integers; otherwise keep matplotlib's decades."""
    xs = sorted(xs)
    if not xs or len(xs) > most or any(v != round(v) for v in xs):
        return
    ax.set_xticks(xs, [f"{v:.0f}" for v in xs])
    ax.xaxis.set_minor_locator(NullLocator())


def _minus(text: str) -> str:
    """Typographic minus signs in numbers."""
    return re.sub(r"(?<=[\s\[])-(?=\d)", "\N{MINUS SIGN}", text)


def _draw_figure(curves: Sequence[CurveFit], axis: str, z: float, pct: str) -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=300, layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    seen: dict[str, int] = defaultdict(int)
    styles, pts, pts_x = [], [], set()
    for c in curves:
        color, marker, filled = sampler_style(c.key.sampler)
        repeat = seen[c.key.sampler]
        seen[c.key.sampler] += 1
        style = {"color": color, "marker": marker, "filled": filled}
        style["ls"] = ("-", "--", ":", "-.")[repeat % 4]
        pts.append(_draw_curve(ax, c, axis, z, _minus(_legend_label(c, curves)), style))
        xs = c.steps if axis == "T" else c.nfe
        pts_x.update(float(v) for v, e in zip(xs, c.errors, strict=True) if e > 0)
        styles.append(style)
    pts = np.vstack(pts) if pts else np.zeros((0, 2))
    if pts.size:
        x0, x1 = pts[:, 0].min(), pts[:, 0].max()
        y0, y1 = pts[:, 1].min(), pts[:, 1].max()
        rx, ry = max(x1 / x0, 4.0), max(y1 / y0, 10.0)  # a single point still gets a frame
        ax.set_xlim(x0 / rx**0.08, x1 * rx**0.08)
        ax.set_ylim(y0 / ry**0.1, y1 * ry**0.1)
        _step_ticks(ax, pts_x)
    frac = _to_axes(ax, pts) if pts.size else np.zeros((0, 2))
    slopes = _reference_slopes(curves)
    handles = [s["handle"] for s in styles]
    labels = [s["label"] for s in styles]
    kinds = {e for _, e in slopes}
    for expected in sorted(kinds, reverse=True):
        handles.append(Line2D([], [], color="0.3", lw=0.7, ls="-" if expected else (0, (3, 2))))
        labels.append("expected order" if expected else "claimed bound")
    legend_box = _place_legend(fig, ax, handles, labels, frac, pct)
    _place_triangles(ax, slopes, frac, legend_box)
    ax.set_xlabel(AXES[axis])
    ax.set_ylabel(METRIC_LABELS.get(curves[0].key.metric, curves[0].key.metric))
    return fig


def plot_curves(
    analysis: Analysis, out_dir: str | Path, *, formats: Sequence[str] = ("pdf", "png")
) -> list[Path]:
    """Write error-vs-T and error-vs-NFE figures, one pair per (target, process, metric) and run
    setting, in every format of ``formats``, to ``out_dir`` (created if missing).

    Files: ``{metric}_vs_T_{target}_{process}[_{setting}].{fmt}`` and ``..._vs_NFE_...``, with
    characters outside [A-Za-z0-9.+-] replaced by '-'. Returns the paths written.
    """
    allowed = ("pdf", "png", "svg", "eps")
    bad = [f for f in formats if f not in allowed]
    if bad or not formats or isinstance(formats, str):
        raise ValueError(
            f"formats must be a non-empty sequence drawn from {allowed}, got {formats!r}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    z = float(stats.norm.ppf(0.5 * (1.0 + analysis.confidence)))
    pct = f"{100 * analysis.confidence:g}%"
    groups: dict[CurveKey, list[CurveFit]] = defaultdict(list)
    for c in analysis.curves:
        if any(v > 0 for v in c.errors if math.isfinite(v)):
            groups[_figure_key(c.key)].append(c)
    paths = []
    with rc_context(STYLE):
        for g, curves in sorted(groups.items(), key=lambda kv: kv[0].sort_key()):
            for axis in ("T", "NFE"):
                fig = _draw_figure(curves, axis, z, pct)
                for fmt in formats:
                    path = out / f"{_file_stem(g, axis)}.{fmt}"
                    fig.savefig(path, format=fmt)
                    paths.append(path)
    return paths
