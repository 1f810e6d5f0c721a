"""Figures of a sweep analysis: error against steps T and against score evaluations (NFE).

One pair of log-log figures per (target, process, metric) and run setting (perturbation, init,
t_end, final noise, denoise, noise kind; non-default settings add a suffix to the file name):

* the points e(T) (mean over seeds) with error bars of +- z se (z the normal quantile of the
  analysis' confidence; exact evaluators have invisible bars) -- faded open markers for flagged
  points (below 10x the evaluator's floor, uncertain, mass off the grid), which no fit uses, and
  a legend entry saying so;
* the fitted line exp(a) T^slope over its window, the slope and its CI in the legend
  ("ddim: slope -1.00 [-1.01, -0.99]");
* colour-blind-safe colours (``_COLORS``) and a marker per sampler; the legend inside the axes
  (the y axis raised to make room if needed) or under them within 15% of the height;
* reference slope triangles for the expected orders of the samplers shown (solid) and for the
  claimed bounds in this metric that differ from them (dashed), placed where the axes hold no
  data.

Other log-log (or semi-log) figures of the claims report -- path KL against T, error plateau
against eps_score, error against d, predicted asymptotes over measured points, local slopes -- are
drawn by ``plot_series`` (and ``plot_local_slopes``) from ``Series`` records. Both use one
drawing core, ``_compose``: ``plot_curves`` turns each fitted curve into a ``Series`` and hands
it the reference slopes, so legend placement, triangles, reference lines and ticks exist once.

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
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator
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
# Colour-blind-safe colours: Okabe & Ito's eight (yellow left out: too faint on white) and Tol's
# "muted" scheme, which stay apart under the common colour-vision deficiencies; the marker (and
# its fill) tells every sampler apart as well, so no figure depends on colour alone. Entry i
# belongs to the i-th registered sampler in sorted order (ddim 3, ddpm 4, li-accel-ddim 10,
# li-accel-ddpm 11: the four that share most figures take blue, vermillion, bluish green and
# reddish purple); colour i and colour i + 10 share a marker and are chosen to contrast.
_COLORS = (
    "#E69F00",  # als: orange
    "#332288",  # ams: indigo
    "#56B4E9",  # cas: sky blue
    "#0072B2",  # ddim: blue
    "#D55E00",  # ddpm: vermillion
    "#CC6677",  # dpm-solver-2: rose
    "#88CCEE",  # edm-heun: cyan
    "#882255",  # em: wine
    "#44AA99",  # ggf: teal
    "#777777",  # langevin: grey
    "#009E73",  # li-accel-ddim: bluish green
    "#CC79A7",  # li-accel-ddpm: reddish purple
    "#117733",  # ode-euler: green
    "#AA4499",  # ode-heun: purple
    "#000000",  # ode-rk45: black
    "#999933",  # pc: olive
    "#997700",  # reverse-diffusion: ochre
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


# --------------------------------------------------------------------------- generic series

KINDS = ("points", "line", "dashed")
FORMATS = ("pdf", "png", "svg", "eps")
_DASHED = (0, (4, 2))  # predictions
_CLAIMED = (0, (3, 2))  # triangles of claimed bounds
# the same style key drawn again (never dashed: dashed lines are predictions)
_REPEAT_LS = ("-", ":", "-.", (0, (6, 1.5, 1, 1.5, 1, 1.5)))
_MARKER_SIZE = 3.5  # points
_NO_BOX = (0.0, 0.0, 0.0, 0.0)


def _vector(owner: str, name: str, value, n: int | None = None) -> np.ndarray:
    """``value`` as a 1-D float64 array (of length ``n`` when given), or ValueError."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {name} must be a sequence of numbers, got {value!r}") from None
    if arr.ndim != 1 or arr.size == 0 or (n is not None and arr.size != n):
        want = f"length {n}" if n is not None else "a non-empty 1-D sequence"
        raise ValueError(f"{owner}: {name} must have {want}, got shape {arr.shape}")
    return arr


@dataclass(frozen=True)
class Series:
    """One set of points or one line of a ``plot_series`` figure.

    Fields:
        label: legend text ("" for no legend entry), e.g. "ddim: slope -1.00 [-1.01, -0.99]";
            minus signs before digits are set as typographic minus signs.
        x, y: coordinates, same length. Points with a non-finite coordinate, or a non-positive one
            on a log axis, are not drawn.
        yerr: half-widths (>= 0, NaN for none) of symmetric error bars, or None. On a log y axis
            the lower bar is cut at 0.9 y so that it stays drawable.
        style: colour/marker key. A registered sampler name takes ``sampler_style``; any other key
            (and each None) takes the next palette colour not used by a sampler of the figure.
            Series sharing a key share colour and marker; the 2nd, 3rd, 4th "points"/"line"
            series of a key get dotted, dash-dotted, dash-dot-dotted lines (dashed lines are
            reserved for predictions).
        kind: "points": markers (filled or open as the style says) joined by a thin line, or
            not joined when ``fit`` is given; "line": a solid line, no markers; "dashed": a dashed
            line, no markers (a prediction such as C T^-p).
        fit: (slope p, log-intercept a, x_lo, x_hi) with 0 < x_lo < x_hi: the line exp(a) x^p,
            drawn on [x_lo, x_hi] only (the window the fit used).
        hollow: per point, True draws the marker open and faded (a point no fit used, e.g. below
            10x the evaluator's floor). Only for kind "points".
    """

    label: str
    x: Sequence[float]
    y: Sequence[float]
    yerr: Sequence[float] | None = None
    style: str | None = None
    kind: str = "points"
    fit: tuple[float, float, float, float] | None = None
    hollow: Sequence[bool] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str):
            raise ValueError(f"Series.label must be a str, got {self.label!r}")
        owner = f"Series {self.label!r}"
        n = _vector(owner, "x", self.x).size
        _vector(owner, "y", self.y, n)
        if self.kind not in KINDS:
            raise ValueError(f"{owner}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.style is not None and not isinstance(self.style, str):
            raise ValueError(f"{owner}: style must be a str or None, got {self.style!r}")
        if self.yerr is not None and np.any(_vector(owner, "yerr", self.yerr, n) < 0):
            raise ValueError(f"{owner}: yerr must be >= 0 (half-widths), got {self.yerr!r}")
        if self.hollow is not None:
            if self.kind != "points":
                raise ValueError(
                    f"{owner}: hollow applies to kind 'points' only, not {self.kind!r}"
                )
            _vector(owner, "hollow", self.hollow, n)
        if self.fit is not None:
            fit = _vector(owner, "fit", self.fit)
            if fit.size != 4 or not np.all(np.isfinite(fit)) or not 0 < fit[2] < fit[3]:
                raise ValueError(
                    f"{owner}: fit must be (slope, log_intercept, x_lo, x_hi), finite, with "
                    f"0 < x_lo < x_hi, got {self.fit!r}"
                )
        self._normalise()

    def _normalise(self) -> None:
        """Store the sequences as tuples of Python floats / bools (hashable, comparable)."""
        for name in ("x", "y", "yerr", "fit"):
            value = getattr(self, name)
            if value is not None:
                values = np.asarray(value, dtype=np.float64).ravel()
                object.__setattr__(self, name, tuple(float(v) for v in values))
        if self.hollow is not None:
            flags = np.asarray(self.hollow).ravel()
            object.__setattr__(self, "hollow", tuple(bool(v) for v in flags))


def _looks(series: Sequence[Series]) -> list[tuple[str, str, bool, object]]:
    """(colour, marker, filled, line style) of each series; see ``Series.style``."""
    from convergence.samplers import REGISTRY

    taken = {sampler_style(s.style)[0] for s in series if s.style in REGISTRY}
    free = [i for i, c in enumerate(_COLORS) if c not in taken] or list(range(len(_COLORS)))
    keyed: dict[object, tuple[str, str, bool]] = {}
    repeats: dict[object, int] = defaultdict(int)
    out = []
    for j, s in enumerate(series):
        key = s.style if s.style is not None else ("unstyled", j)
        if key not in keyed:
            if s.style in REGISTRY:
                keyed[key] = sampler_style(s.style)
            else:
                i = free[sum(k not in REGISTRY for k in keyed) % len(free)]
                keyed[key] = (_COLORS[i], _MARKERS[i % len(_MARKERS)], True)
        if s.kind == "dashed":
            ls = _DASHED
        else:
            ls = _REPEAT_LS[repeats[key] % len(_REPEAT_LS)]
            repeats[key] += 1
        out.append((*keyed[key], ls))
    return out


def _drawable(x: np.ndarray, y: np.ndarray, xlog: bool, ylog: bool) -> np.ndarray:
    good = np.isfinite(x) & np.isfinite(y)
    if xlog:
        good &= x > 0
    if ylog:
        good &= y > 0
    return good


def _draw_series(ax, s: Series, look, xlog: bool, ylog: bool):
    """Draw one series; returns (markers (m, 2), polylines [(k, 2)], legend handle), all in data
    units: the markers and every drawn line (error bars, joins, fitted line) count as data."""
    color, marker, filled, ls = look
    fill = color if filled else "white"
    x = np.asarray(s.x, dtype=np.float64)
    y = np.asarray(s.y, dtype=np.float64)
    good = _drawable(x, y, xlog, ylog)
    paths: list[np.ndarray] = []
    bars = None
    if s.yerr is not None:
        half = np.nan_to_num(np.asarray(s.yerr, dtype=np.float64), nan=0.0, posinf=0.0)
        lower = np.minimum(half, 0.9 * y) if ylog else half
        bars = np.vstack([lower, half])
        for i in np.flatnonzero(good & (half > 0)):
            paths.append(np.array([[x[i], y[i] - lower[i]], [x[i], y[i] + half[i]]]))
    bar_style = dict(elinewidth=0.6, capsize=1.5, capthick=0.6, linestyle="none", zorder=3)
    marks = np.zeros((0, 2))
    if s.kind == "points":
        hollow = np.zeros(x.size, bool) if s.hollow is None else np.asarray(s.hollow, bool)
        for mask, face, alpha, gid in (
            (good & ~hollow, fill, 1.0, "series-points"),
            (good & hollow, "white", 0.5, "series-hollow"),
        ):
            if mask.any():
                cont = ax.errorbar(
                    x[mask],
                    y[mask],
                    yerr=None if bars is None else bars[:, mask],
                    fmt=marker,
                    color=color,
                    mfc=face,
                    alpha=alpha,
                    mew=0.7,
                    ms=_MARKER_SIZE,
                    **bar_style,
                )
                cont.lines[0].set_gid(gid)
        marks = np.column_stack([x[good], y[good]])
        if s.fit is None and good.sum() >= 2:
            ax.plot(x[good], y[good], color=color, lw=0.6, ls=ls, alpha=0.8, zorder=2, gid="join")
            paths.append(marks)
        lw = 1.1 if s.fit is not None else 0.6
        handle = Line2D(
            [], [], color=color, marker=marker, mfc=fill, mew=0.7, ms=_MARKER_SIZE, lw=lw, ls=ls
        )
    else:
        lw = 1.1 if s.kind == "line" else 1.0
        if good.any():
            ax.plot(x[good], y[good], color=color, lw=lw, ls=ls, zorder=2, gid=f"series-{s.kind}")
            paths.append(np.column_stack([x[good], y[good]]))
            if bars is not None:
                ax.errorbar(
                    x[good], y[good], yerr=bars[:, good], fmt="none", ecolor=color, **bar_style
                )
        handle = Line2D([], [], color=color, lw=lw, ls=ls)
    if s.fit is not None:
        p, a, lo, hi = s.fit
        t = np.geomspace(lo, hi, 60) if xlog else np.linspace(lo, hi, 60)
        f = np.exp(a) * t**p
        ax.plot(t, f, color=color, lw=1.1, ls=ls, alpha=0.9, zorder=2, gid="fit")
        paths.append(np.column_stack([t, f]))
    return marks, paths, handle


def _set_limits(ax, xs: np.ndarray, ys: np.ndarray, xlog: bool, ylog: bool, ymin_span: float):
    """Frame the data: on a log axis a margin of 8% (x) / 10% (y) of the log range, the range
    being at least a factor 4 (x) / 10 (y), so a single point still gets a frame; on a linear
    axis the same fractions of the range (at least ``ymin_span`` for y, else 1)."""
    ax.autoscale(False)  # the frame is set here (autoscaling warns on zero-size error bars)
    for is_y, v, log, pad, least in ((False, xs, xlog, 0.08, 4.0), (True, ys, ylog, 0.1, 10.0)):
        lo, hi = float(v.min()), float(v.max())
        if log:
            r = max(hi / lo, least)
            lo, hi = lo / r**pad, hi * r**pad
        else:
            span = max(hi - lo, ymin_span if is_y else 0.0) or 1.0
            mid = 0.5 * (lo + hi)
            lo, hi = mid - (0.5 + pad) * span, mid + (0.5 + pad) * span
        (ax.set_ylim if is_y else ax.set_xlim)(lo, hi)


def _to_axes(ax, pts: np.ndarray) -> np.ndarray:
    """Data points (x, y) -> axes fractions (any scales; the limits must be set)."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return ax.transAxes.inverted().transform(ax.transData.transform(pts))


def _fractions(ax, marks: np.ndarray, paths: Sequence[np.ndarray], step: float = 0.005):
    """Axes fractions of the markers (each as its centre and 8 points on the square around it,
    half a marker wide) and of every polyline, sampled every ``step`` along its segments
    (straight on screen), so a text box touching a marker or crossed by a line counts as
    covering data. The figure must have been laid out (drawn)."""
    bb = ax.get_window_extent()
    r = (0.5 * _MARKER_SIZE + 0.35) * ax.figure.dpi / 72.0  # marker half-size + edge, pixels
    halo = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)]) * (
        r / bb.width,
        r / bb.height,
    )
    centres = _to_axes(ax, marks)
    parts = [(centres[:, None, :] + halo[None]).reshape(-1, 2)]
    for path in paths:
        f = _to_axes(ax, path)
        seg = np.diff(f, axis=0)
        counts = np.maximum(1, np.ceil(np.hypot(seg[:, 0], seg[:, 1]) / step)).astype(int)
        for start, d, k in zip(f[:-1], seg, counts, strict=True):
            parts.append(start + np.outer(np.arange(k) / k, d))
        parts.append(f[-1:])
    frac = np.vstack(parts)
    return frac[np.all(np.isfinite(frac), axis=1)]


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
    fig: Figure, ax, legend, handles, frac: np.ndarray, below: tuple[list[str], str | None]
) -> tuple[float, ...]:
    """Move ``legend`` (``ax.legend(handles, ..., loc="upper right")``, the figure drawn since)
    to the corner of the axes whose box covers no data point (preference order of
    ``_LEGEND_CORNERS``); if every corner covers data, raise the top of the y axis until an upper
    corner is free (``_make_room``: at most ``MAX_STRETCH`` times the data's span); failing that,
    put it under the axes with the labels and title of ``below`` (as many columns as fit the
    width, up to four; when it would take more than ``LEGEND_SHARE`` of the height, the labels
    cut at their first ": " and the title dropped, then 6 pt text) and make the figure taller by
    its height, so the axes keep their size.
    Returns the legend's box in axes fractions (an empty box when it is outside)."""
    bb = legend.get_window_extent().transformed(ax.transAxes.inverted())
    # the pad is one length in font units: a different axes fraction across and up
    w, h, pad_x, pad_y = bb.width, bb.height, 1.0 - bb.x1, 1.0 - bb.y1
    for loc, (cx, cy) in _LEGEND_CORNERS.items():
        x0 = pad_x if cx == 0 else 1.0 - pad_x - w
        y0 = pad_y if cy == 0 else 1.0 - pad_y - h
        box = (x0, y0, x0 + w, y0 + h)
        if _count_inside(frac, box) == 0:
            legend.set_loc(loc)
            return box
    room = _make_room(ax, frac, w, h, pad_x, pad_y)
    if room is not None:
        legend.set_loc(room[0])
        return room[1]
    legend.remove()
    labels, title = below
    legend, height = _legend_below(fig, handles, labels, title)
    legend_texts = labels
    if height > LEGEND_SHARE / (1.0 - LEGEND_SHARE) * FIGSIZE[1]:
        # too tall for a column-wide figure: names only (the numbers are in the tables)
        bare = [label.split(": ")[0] for label in labels]
        if bare != labels:
            legend.remove()
            legend, height = _legend_below(fig, handles, bare, None)
            legend_texts = bare
    if height > LEGEND_SHARE / (1.0 - LEGEND_SHARE) * FIGSIZE[1]:
        legend.remove()  # still too tall: the smallest print size, 6 pt, set tighter
        legend, height = _legend_below(fig, handles, legend_texts, None, small=True)
    fig.set_size_inches(FIGSIZE[0], FIGSIZE[1] + height)
    return _NO_BOX


def _legend_below(fig: Figure, handles, labels, title, small: bool = False):
    """The legend under the axes in as many columns (4 at most) as fit the figure's width, and
    its height in inches; ``small``: 6 pt text, tighter rows and columns."""
    size = {"fontsize": 6, "handlelength": 1.3, "handletextpad": 0.4} if small else {}
    for ncols in (4, 3, 2, 1):
        legend = fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=ncols,
            columnspacing=0.8 if small else 1.0,
            labelspacing=0.2 if small else 0.3,
            title=title,
            title_fontsize=7,
            **size,
        )
        fig.draw_without_rendering()
        if legend.get_window_extent().width <= 0.98 * FIGSIZE[0] * fig.dpi or ncols == 1:
            break
        legend.remove()
    return legend, legend.get_window_extent().height / fig.dpi


LEGEND_SHARE = 0.15  # a legend under the axes takes at most this share of the figure's height
MAX_STRETCH = 2.0  # _make_room may stretch the y span so that the data keep half the height


def _make_room(ax, frac: np.ndarray, w: float, h: float, pad_x: float, pad_y: float):
    """Raise the top of the y axis (log or linear scale, bottom fixed) just enough that the data
    under the upper-right or upper-left legend box of size (w, h) sink below it, choosing the
    corner that needs less; returns (loc, box) or None when more than ``MAX_STRETCH`` times the
    current span would be needed."""
    top = 1.0 - pad_y - h  # the legend's lower edge, axes fraction
    if top * MAX_STRETCH <= 1.0:
        return None
    best = None
    for loc, x0 in (("upper right", 1.0 - pad_x - w), ("upper left", pad_x)):
        under = frac[(frac[:, 0] > x0) & (frac[:, 0] < x0 + w), 1]
        need = max(float(under.max(initial=0.0)) / top * 1.03, 1.0)  # 3% clearance
        if best is None or need < best[0]:
            best = (need, loc, x0)
    need, loc, x0 = best
    if need > MAX_STRETCH:
        return None
    y0, y1 = ax.get_ylim()
    if ax.get_yscale() == "log":
        ax.set_ylim(y0, y0 * (y1 / y0) ** need)
    else:
        ax.set_ylim(y0, y0 + (y1 - y0) * need)
    return loc, (x0, top, x0 + w, 1.0 - pad_y)


def _triangle_sizes(ax, slopes) -> list[tuple[float, float]]:
    """(width, height) in axes fractions of each triangle: a horizontal leg along log x and a
    vertical leg |s| times as long in log-y units; the width is adjusted so the height stays
    within [0.06, 0.28] of the axes (and the width within [0.06, 0.25])."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    aspect = math.log(x1 / x0) / math.log(y1 / y0)  # axes-fraction height per unit slope
    out = []
    for s, _ in slopes:
        w = 0.1
        h = abs(s) * w * aspect
        if h > 0.28:
            w = max(0.06, w * 0.28 / h)
        elif h < 0.06:
            w = min(0.25, w * 0.06 / h)
        out.append((w, abs(s) * w * aspect))
    return out


def _place_triangles(ax, slopes, frac: np.ndarray, obstacles) -> tuple[float, ...]:
    """Draw reference triangles of the signed slopes (s, solid) side by side -- falling ones
    first, then rising ones, each by |s| -- where they cover the fewest data points and miss
    every box of ``obstacles`` (a grid search over positions in axes fractions; ties go to the
    lower left). Each is labelled "1" under its horizontal leg and |s| beside its vertical leg
    (left of a falling triangle, right of a rising one); dashed when not solid. Returns the box
    of the block with its labels (axes fractions)."""
    slopes = sorted(slopes, key=lambda se: (se[0] > 0, abs(se[0])))
    if not slopes:
        return _NO_BOX
    sizes = _triangle_sizes(ax, slopes)
    gap = 0.08
    left = 0.08 if slopes[0][0] < 0 else 0.02  # room for the labels beside the vertical legs
    right = 0.08 if slopes[-1][0] > 0 else 0.02
    block_w = sum(w for w, _ in sizes) + gap * (len(sizes) - 1)
    block_h = max(h for _, h in sizes)
    best = None
    for bx in np.linspace(0.02 + left, max(0.02 + left, 0.99 - right - block_w), 15):
        for by in np.linspace(0.09, max(0.09, 0.95 - block_h), 15):  # "1" clear of the ticks
            # the box includes the labels: "1" below, |s| beside
            box = (bx - left, by - 0.07, bx + block_w + right, by + block_h + 0.03)
            score = (
                any(_overlap(box, o) for o in obstacles),
                _count_inside(frac, box),
                round(bx + by, 6),
            )
            if best is None or score < best[0]:
                best = (score, bx, by, box)
    _, bx, by, block = best
    to_data = ax.transAxes + ax.transData.inverted()
    text = dict(transform=ax.transAxes, fontsize=7, color="0.2", gid="slope-label")
    x = bx
    for (s, solid), (w, h) in zip(slopes, sizes, strict=True):
        if s < 0:
            corners = [[x, by + h], [x, by], [x + w, by], [x, by + h]]
            ax.text(x - 0.012, by + h / 2, f"{abs(s):g}", ha="right", va="center", **text)
        else:
            corners = [[x, by], [x + w, by], [x + w, by + h], [x, by]]
            ax.text(x + w + 0.012, by + h / 2, f"{abs(s):g}", ha="left", va="center", **text)
        xy = to_data.transform(np.array(corners))
        ls = "-" if solid else _CLAIMED
        ax.plot(xy[:, 0], xy[:, 1], color="0.3", lw=0.7, ls=ls, zorder=1, gid="slope-triangle")
        ax.text(x + w / 2, by - 0.015, "1", ha="center", va="top", **text)
        x += w + gap
    return block


def _place_hline_labels(ax, texts, ys, frac: np.ndarray, obstacles) -> list[tuple[float, ...]]:
    """Move each reference-line label just above or below its line, at one of 9 positions from
    the right end to the left end: the first (above before below, right before left) whose box
    misses the obstacles and the boxes of earlier labels and covers the fewest data points.
    Returns the label boxes in axes fractions."""
    boxes: list[tuple[float, ...]] = []
    for t, y in zip(texts, ys, strict=True):
        bb = t.get_window_extent().transformed(ax.transAxes.inverted())
        w, h = bb.width, bb.height
        fy = _to_axes(ax, [[ax.get_xlim()[0], y]])[0, 1]
        best = None
        for side, y0 in enumerate((fy + 0.015, fy - 0.015 - h)):
            if y0 < 0.005 or y0 + h > 0.995:
                continue
            for k, x0 in enumerate(np.linspace(0.98 - w, 0.02, 9)):
                box = (x0, y0, x0 + w, y0 + h)
                clash = any(_overlap(box, o) for o in [*obstacles, *boxes])
                score = (clash, _count_inside(frac, box), side, k)
                if best is None or score < best[0]:
                    best = (score, box)
        box = best[1] if best else (0.98 - w, fy + 0.015, 0.98, fy + 0.015 + h)
        t.set_position(box[:2])
        boxes.append(box)
    return boxes


def _set_ticks(ax, xs: Sequence[float], xlog: bool, ylog: bool, most: int = 9) -> None:
    """Minor ticks on every axis (2..9 x 10^k on a log axis, in every decade); the x axis is
    labelled at the measured x values (plain integers: step counts, NFE, dimensions, levels)
    when there are at most ``most`` of them and they are integers, else matplotlib's ticks."""
    from matplotlib.ticker import AutoMinorLocator

    for axis, log in ((ax.xaxis, xlog), (ax.yaxis, ylog)):
        axis.set_minor_locator(
            LogLocator(base=10, subs=np.arange(2, 10), numticks=1000) if log else AutoMinorLocator()
        )
        if log:
            axis.set_minor_formatter(FuncFormatter(partial(_minor_log_label, axis)))
    xs = sorted(set(xs))
    if not xs or len(xs) > most or any(v != round(v) for v in xs):
        return
    ax.set_xticks(xs, [f"{v:.0f}" for v in xs])
    if xlog:
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_minor_locator(NullLocator())


def _minor_log_label(axis, value: float, pos) -> str:
    """Minor tick labels of a log axis: none when two or more powers of ten are in view (they
    label it), else only at 2 and 5 x 10^k (matplotlib's default also labels 3, 4 and 6,
    whose labels collide at one column's width)."""
    lo, hi = sorted(axis.get_view_interval())
    if lo <= 0 or math.floor(math.log10(hi) + 1e-9) - math.ceil(math.log10(lo) - 1e-9) >= 1:
        return ""
    k = math.floor(math.log10(value) + 1e-9)
    mantissa = round(value / 10**k, 6)
    if mantissa not in (2.0, 5.0):
        return ""
    return f"${mantissa:g}\\times10^{{{k}}}$" if not 0 <= k <= 3 else f"{value:g}"


def _tick_labels_overlap(ax) -> bool:
    """Whether two x tick labels overlap (the figure must have been drawn)."""
    boxes = sorted(
        (t.get_window_extent() for t in ax.xaxis.get_ticklabels() if t.get_text()),
        key=lambda b: b.x0,
    )
    return any(a.x1 > b.x0 - 1.0 for a, b in zip(boxes, boxes[1:], strict=False))


def _minus(text: str) -> str:
    """Typographic minus signs in numbers."""
    return re.sub(r"(?<=[\s\[(=])-(?=\d)", "\N{MINUS SIGN}", text)


HOLLOW_LABEL = "faded open marker = flagged point, not fitted"


def _hollow_handle() -> Line2D:
    """The legend entry that explains open, faded markers (``Series.hollow``)."""
    return Line2D(
        [], [], color="0.4", marker="o", mfc="white", mew=0.7, ms=_MARKER_SIZE, ls="none", alpha=0.5
    )


def _compose(
    series: Sequence[Series],
    *,
    xlabel: str,
    ylabel: str,
    slopes: Sequence[tuple[float, bool]] = (),
    xlog: bool = True,
    ylog: bool = True,
    hlines: Sequence[tuple[float, str]] = (),
    title: str | None = None,
    extra_legend: Sequence[tuple[Line2D, str]] = (),
    below_title: str | None = None,
    below_short: bool = False,
    ymin_span: float = 0.0,
) -> Figure:
    """The drawing core of every figure of this module: one single-column axes with the series,
    the reference lines ``hlines`` (y, label), the legend (series with a label, then
    ``extra_legend``) in a corner free of data or under the axes (title ``below_title``; with
    ``below_short`` the word "slope" leaves the labels), the line labels and the slope
    triangles where they cover no data, text and legend; minor ticks on every axis."""
    fig = Figure(figsize=FIGSIZE, dpi=300, layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log" if xlog else "linear")
    ax.set_yscale("log" if ylog else "linear")
    marks, paths, handles, labels, tick_xs = [], [], [], [], []
    for s, look in zip(series, _looks(series), strict=True):
        m, p, handle = _draw_series(ax, s, look, xlog, ylog)
        marks.append(m)
        paths += p
        if s.label:
            handles.append(handle)
            labels.append(_minus(s.label))
        if s.kind == "points":
            tick_xs += m[:, 0].tolist()
    marks = np.vstack(marks)
    verts = np.vstack([marks, *paths])
    if verts.size == 0:
        raise ValueError(
            "nothing to draw: no series has a point with finite coordinates (positive on log axes)"
        )
    ys = np.concatenate([verts[:, 1], [y for y, _ in hlines]])
    _set_limits(ax, verts[:, 0], ys, xlog, ylog, ymin_span)
    _set_ticks(ax, tick_xs, xlog, ylog)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=8)
    texts = []
    for y, text in hlines:
        ax.axhline(y, color="0.45", lw=0.6, ls=(0, (1, 1.5)), zorder=1, gid="hline")
        if text:
            texts.append(
                ax.text(
                    0,
                    0,
                    _minus(text),
                    transform=ax.transAxes,
                    fontsize=7,
                    color="0.25",
                    ha="left",
                    va="bottom",
                    gid="hline-label",
                )
            )
    handles += [h for h, _ in extra_legend]
    labels += [label for _, label in extra_legend]
    if any(s.hollow is not None and any(s.hollow) for s in series if s.kind == "points"):
        handles.append(_hollow_handle())
        labels.append(HOLLOW_LABEL)
    legend = ax.legend(handles, labels, loc="upper right", borderaxespad=0.4) if handles else None
    fig.draw_without_rendering()  # lays the axes out: axes fractions of text become final
    if tick_xs and _tick_labels_overlap(ax):  # measured x values too close: default ticks
        ax.set_xscale(ax.get_xscale())
        _set_ticks(ax, (), xlog, ylog)
        fig.draw_without_rendering()
    x0, x1 = ax.get_xlim()
    lines = [np.array([[x0, y], [x1, y]]) for y, _ in hlines]
    frac = _fractions(ax, marks, [*paths, *lines])
    legend_box = _NO_BOX
    if legend is not None:
        short = [lb.replace(": slope ", ": ") for lb in labels] if below_short else labels
        ylim = ax.get_ylim()
        legend_box = _place_legend(fig, ax, legend, handles, frac, (short, below_title))
        if ax.get_ylim() != ylim:  # _make_room raised the top: the data moved down
            fig.draw_without_rendering()
            frac = _fractions(ax, marks, [*paths, *lines])
    label_ys = [y for y, text in hlines if text]
    boxes = _place_hline_labels(ax, texts, label_ys, frac, [legend_box])
    _place_triangles(ax, slopes, frac, [legend_box, *boxes])
    return fig


def _check_formats(formats: Sequence[str]) -> None:
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats or isinstance(formats, str):
        raise ValueError(
            f"formats must be a non-empty sequence drawn from {FORMATS}, got {formats!r}"
        )


def _save(fig: Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, format=fmt)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- sweep curves


def _curve_series(curve: CurveFit, axis: str, z: float, label: str) -> Series:
    """A fitted curve as a Series: e(T) (or e(NFE)) with +- z se bars, hollow where unresolved,
    the fitted line exp(a) T^p over its window. On the NFE axis the window's T are scaled by the
    median NFE/T of the window, r, and the line is exp(a - p log r) NFE^p (the same line)."""
    e = np.asarray(curve.errors, dtype=np.float64)
    x = np.asarray(curve.steps if axis == "T" else curve.nfe, dtype=np.float64)
    fit = None
    f = curve.fit
    if f is not None and math.isfinite(curve.slope):
        (lo, hi), a = f.window, f.intercept
        if axis == "NFE":
            i0, i1 = f.window_indices
            nfe = np.asarray(curve.nfe[i0 : i1 + 1], dtype=np.float64)
            r = float(np.nanmedian(nfe / np.asarray(curve.steps[i0 : i1 + 1])))
            lo, hi, a = lo * r, hi * r, a - f.slope * math.log(r)
        fit = (f.slope, a, float(lo), float(hi))
    return Series(
        label,
        x,
        e,
        yerr=z * np.asarray(curve.std_errors, dtype=np.float64),
        style=curve.key.sampler,
        fit=fit,
        hollow=~_resolved(curve, e),
    )


def _draw_figure(curves: Sequence[CurveFit], axis: str, z: float, pct: str) -> Figure:
    series = [_curve_series(c, axis, z, _legend_label(c, curves)) for c in curves]
    slopes = _reference_slopes(curves)
    extra = [
        (
            Line2D([], [], color="0.3", lw=0.7, ls="-" if expected else _CLAIMED),
            "expected order" if expected else "claimed bound",
        )
        for expected in sorted({e for _, e in slopes}, reverse=True)
    ]
    return _compose(
        series,
        xlabel=AXES[axis],
        ylabel=METRIC_LABELS.get(curves[0].key.metric, curves[0].key.metric),
        slopes=[(-v, expected) for v, expected in slopes if v != 0],
        extra_legend=extra,
        below_title=f"fitted slope [{pct} CI]",
        below_short=True,
    )


def plot_curves(
    analysis: Analysis, out_dir: str | Path, *, formats: Sequence[str] = ("pdf", "png")
) -> list[Path]:
    """Write error-vs-T and error-vs-NFE figures, one pair per (target, process, metric) and run
    setting, in every format of ``formats``, to ``out_dir`` (created if missing).

    Files: ``{metric}_vs_T_{target}_{process}[_{setting}].{fmt}`` and ``..._vs_NFE_...``, with
    characters outside [A-Za-z0-9.+-] replaced by '-'. Returns the paths written.
    """
    _check_formats(formats)
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
                paths += _save(fig, out / _file_stem(g, axis), formats)
    return paths


# --------------------------------------------------------------------------- other figures


def _checked(series, slopes, hlines, xlog: bool, ylog: bool):
    """Validated (series list, [(slope, solid)], [(y, label)]) of ``plot_series``' arguments."""
    series = list(series)
    if not series or not all(isinstance(s, Series) for s in series):
        raise ValueError(f"series must be a non-empty sequence of Series, got {series!r}")
    pairs = []
    for item in slopes:
        s, solid = item if isinstance(item, tuple) and len(item) == 2 else (item, True)
        try:
            s = float(s)
        except (TypeError, ValueError):
            s = math.nan
        if not math.isfinite(s) or s == 0:
            raise ValueError(
                f"slopes must be finite non-zero numbers or (slope, solid), got {item!r}"
            )
        pairs.append((float(s), bool(solid)))
    if pairs and not (xlog and ylog):
        raise ValueError("slope triangles need log-log axes (xlog=True, ylog=True)")
    lines = []
    for item in hlines:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str)):
            raise ValueError(f"hlines must be (y, label) pairs, got {item!r}")
        y = float(item[0])
        if not math.isfinite(y) or (ylog and y <= 0):
            raise ValueError(f"hline y must be finite{' and > 0 on a log axis' * ylog}, got {y!r}")
        lines.append((y, item[1]))
    return series, pairs, lines


def plot_series(
    series: Sequence[Series],
    out_stem: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    slopes: Sequence[float | tuple[float, bool]] = (),
    xlog: bool = True,
    ylog: bool = True,
    hlines: Sequence[tuple[float, str]] = (),
    title: str | None = None,
    formats: Sequence[str] = ("pdf", "png"),
) -> list[Path]:
    """Write one single-column figure of ``series`` to ``{out_stem}.{fmt}`` for every format
    (parent folders created); returns the paths written.

    Same look as ``plot_curves``: the STYLE rc settings, 3.4 x 2.6 inch axes, the legend in a
    corner free of data (else under the axes, the figure growing taller), minor ticks on every
    axis, the x axis labelled at the x values of the "points" series when they are at most 9
    integers (and their labels do not overlap).

    Args:
        series: the points and lines (see ``Series``), drawn in order.
        xlabel, ylabel: axis labels (mathtext allowed).
        slopes: reference triangles, each a signed slope s (the triangle's hypotenuse rises as
            x^s; s < 0 falls) or (s, solid) with solid=False for a dashed triangle (a claimed
            bound); labelled "1" and |s|, placed where they cover no data, legend or text.
            Log-log axes only.
        xlog, ylog: logarithmic axes (else linear).
        hlines: (y, label) horizontal reference lines across the axes (dotted, grey), e.g. a
            noise floor or 1 for a ratio, the label ("" for none) set just above or below the
            line where it covers no data or legend.
        title: optional title above the axes.
        formats: among ``FORMATS``; PDF, SVG and EPS are vector files.

    Raises:
        ValueError: bad series, slopes, hlines or formats, or nothing drawable.
    """
    _check_formats(formats)
    series, pairs, lines = _checked(series, slopes, hlines, xlog, ylog)
    stem = Path(out_stem)
    with rc_context(STYLE):
        fig = _compose(
            series,
            xlabel=xlabel,
            ylabel=ylabel,
            slopes=pairs,
            xlog=bool(xlog),
            ylog=bool(ylog),
            hlines=lines,
            title=title,
        )
        stem.parent.mkdir(parents=True, exist_ok=True)
        return _save(fig, stem, formats)


def _local_slopes_figure(
    series: Sequence[Series],
    expected: Sequence[float],
    *,
    xlabel: str = AXES["T"],
    ylabel: str = r"local slope $p_k$",
    title: str | None = None,
) -> Figure:
    lines = [(p, f"expected {p:g}") for p in expected]
    series, _, lines = _checked(series, (), lines, True, False)
    return _compose(
        series, xlabel=xlabel, ylabel=ylabel, ylog=False, hlines=lines, title=title, ymin_span=1.0
    )


def plot_local_slopes(
    series: Sequence[Series],
    out_stem: str | Path,
    *,
    expected: Sequence[float] = (),
    xlabel: str = AXES["T"],
    ylabel: str = r"local slope $p_k$",
    title: str | None = None,
    formats: Sequence[str] = ("pdf", "png"),
) -> list[Path]:
    """Local slopes p_k = log(e_{k+1}/e_k) / log(T_{k+1}/T_k) (``rates.local_slopes``) against
    T on a log x axis and a linear y axis spanning at least 1, with a dotted horizontal line at
    each expected slope (labelled "expected p", p signed like the slopes). Give each series
    x_k = sqrt(T_k T_{k+1}), the geometric midpoint of the chord. Otherwise as ``plot_series``
    (files ``{out_stem}.{fmt}``; returns their paths)."""
    _check_formats(formats)
    stem = Path(out_stem)
    with rc_context(STYLE):
        fig = _local_slopes_figure(series, expected, xlabel=xlabel, ylabel=ylabel, title=title)
        stem.parent.mkdir(parents=True, exist_ok=True)
        return _save(fig, stem, formats)
