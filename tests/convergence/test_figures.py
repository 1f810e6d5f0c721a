"""Figures of a sweep analysis (convergence.figures) on synthetic records with known slopes."""

import math
import struct

import numpy as np
import pytest
from matplotlib import rc_context
from matplotlib.ticker import LogLocator

from convergence.analysis import analyse
from convergence.figures import (
    FIGSIZE,
    STYLE,
    Series,
    _compose,
    _count_inside,
    _draw_figure,
    _local_slopes_figure,
    _overlap,
    plot_curves,
    plot_local_slopes,
    plot_series,
    sampler_style,
)
from convergence.samplers import REGISTRY


def records(sampler, metric, target, values, *, nfe_per_step=1, seeds=(0,), rel_unc=0.0):
    """Record dicts of e(T) = values(T, seed) on a doubling grid (samples evaluator when
    rel_unc > 0, so that error bars and a bootstrap appear)."""
    evaluator = "samples" if rel_unc else "gaussian"
    out = []
    for seed in seeds:
        for T in (8, 16, 32, 64, 128):
            v = values(T, seed)
            out.append(
                {
                    "key": f"{sampler}/{metric}/{target}/{T}/{seed}",
                    "run_id": 1,
                    "target": target,
                    "dim": 2,
                    "process": "vp",
                    "sampler": sampler,
                    "options": {},
                    "steps": T,
                    "perturbation": None,
                    "metric": metric,
                    "evaluator": "auto",
                    "seed": seed,
                    "n": 500,
                    "init": "exact",
                    "t_end_requested": None,
                    "final_noise": False,
                    "denoise": False,
                    "noise": "independent",
                    "status": "ok",
                    "message": "",
                    "value": v,
                    "uncertainty": rel_unc * v,
                    "evaluator_used": evaluator,
                    "floor": 0.0,
                    "exact": not rel_unc,
                    "lower_bound": None,
                    "nfe": nfe_per_step * T,
                    "t_end": 1e-3,
                    "n_samples": 500,
                    "reference": "",
                    "note": "",
                    "eps_score": None,
                    "eps_jacobi": None,
                    "wall": 0.0,
                    "finished": "",
                }
            )
    return out


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def analysis():
    recs = records("ddim", "kl", "gaussian:d=2", lambda T, s: 3.0 * T**-2.0)
    recs += records("ode-heun", "kl", "gaussian:d=2", lambda T, s: 0.5 * T**-4.0, nfe_per_step=2)
    recs += records(
        "ddpm",
        "w2",
        "gmm:d=2,k=3,seed=0",
        lambda T, s: 1.0 / T * (1.0 + 0.1 * math.sin(T + 3 * s)),
        seeds=(0, 1, 2),
        rel_unc=0.1,
    )
    return analyse(recs, n_boot=200)


def test_one_pdf_and_png_per_target_process_metric_and_axis(analysis, tmp_path):
    paths = plot_curves(analysis, tmp_path / "figs")
    names = sorted(p.name for p in paths)
    expected = sorted(
        f"{metric}_vs_{axis}_{target}_vp.{fmt}"
        for metric, target in (("kl", "gaussian-d-2"), ("w2", "gmm-d-2-k-3-seed-0"))
        for axis in ("T", "NFE")
        for fmt in ("pdf", "png")
    )
    assert names == expected
    for p in paths:
        assert p.exists() and p.stat().st_size > 5000
        if p.suffix == ".pdf":
            assert p.read_bytes()[:5] == b"%PDF-"
        else:  # one paper column at 300 dpi; the legend fits inside the axes here
            assert _png_size(p) == (round(FIGSIZE[0] * 300), round(FIGSIZE[1] * 300))


def test_formats_and_a_legend_too_big_for_the_axes(tmp_path):
    """Seven samplers: no corner of the axes is free and raising the y axis cannot free one, so
    the legend goes under them, the figure growing taller by at most 15% of its height (the
    width stays one column)."""
    recs = []
    for i, name in enumerate(("ddpm", "ddim", "ode-euler", "ode-heun", "dpm-solver-2", "em", "pc")):
        p = 1.0 if i < 3 else 2.0
        recs += records(name, "tv", "gaussian:d=2", lambda T, s, i=i, p=p: (1 + i) * 0.02 * T**-p)
    paths = plot_curves(analyse(recs), tmp_path, formats=("png",))
    assert [p.name for p in paths] == [
        "tv_vs_T_gaussian-d-2_vp.png",
        "tv_vs_NFE_gaussian-d-2_vp.png",
    ]
    width, height = _png_size(paths[0])
    base = round(FIGSIZE[1] * 300)
    assert width == round(FIGSIZE[0] * 300) and base + 50 < height <= base / 0.85 + 1
    with pytest.raises(ValueError, match="formats must be"):
        plot_curves(analyse(recs), tmp_path, formats=("jpg",))


def test_every_registered_sampler_has_its_own_style():
    styles = {name: sampler_style(name) for name in REGISTRY}
    assert len({c for c, _, _ in styles.values()}) == len(REGISTRY)  # distinct colours
    assert len({(m, f) for _, m, f in styles.values()}) == len(REGISTRY)  # distinct markers
    assert sampler_style("ddim") == styles["ddim"]  # stable
    assert sampler_style("not-registered")[0].startswith("#")


# --------------------------------------------------------------------------- plot_series

T = np.array([8, 16, 32, 64, 128, 256, 512, 1024], dtype=float)


def _frac(ax, xy):
    """Data (x, y) -> axes fractions, independently of the module's helpers."""
    return ax.transAxes.inverted().transform(ax.transData.transform(np.asarray(xy, float)))


def _data_fractions(ax, n=40):
    """Axes fractions of every drawn data line: markers as points, lines sampled n times per
    segment (reference triangles and horizontal reference lines excluded)."""
    parts = []
    for line in ax.lines:
        if line.get_gid() in ("slope-triangle", "hline"):
            continue
        f = _frac(ax, line.get_xydata())
        f = f[np.all(np.isfinite(f), axis=1)]
        parts.append(f)
        if line.get_linestyle() not in ("None", "none", "") and len(f) > 1:
            t = np.linspace(0.0, 1.0, n, endpoint=False)
            parts += [a + np.outer(t, b - a) for a, b in zip(f[:-1], f[1:], strict=True)]
    return np.vstack(parts)


def _box(ax, artist):
    bb = artist.get_window_extent().transformed(ax.transAxes.inverted())
    return (bb.x0, bb.y0, bb.x1, bb.y1)


@pytest.fixture
def paper_style():
    """The module's rc settings for the whole test: text extents depend on the fonts."""
    with rc_context(STYLE):
        yield


def _gid(artists, gid):
    return [a for a in artists if a.get_gid() == gid]


def _path_kl_like():
    """Two exact power laws with pre-asymptotic corrections: fitted lines over [32, 1024] and
    [64, 1024], error bars, the first two points of the second flagged hollow."""
    path = 0.8 / T * (1 + 0.5 / T)
    marg = 0.3 / T**2 * (1 + 2.0 / T)
    return [
        Series(
            "path KL: slope -1.00 [-1.01, -0.99]",
            T,
            path,
            yerr=0.05 * path,
            style="ddpm",
            fit=(-1.0, np.log(0.8), 32.0, 1024.0),
        ),
        Series(
            "marginal KL: slope -2.00 [-2.01, -1.99]",
            T,
            marg,
            style="ddim",
            fit=(-2.0, np.log(0.3), 64.0, 1024.0),
            hollow=T < 20,
        ),
    ]


def test_plot_series_writes_vector_pdf_and_one_column_png(tmp_path):
    paths = plot_series(
        _path_kl_like(),
        tmp_path / "sub" / "path_kl",
        xlabel="steps $T$",
        ylabel="KL divergence",
        slopes=(-1, -2),
    )
    assert [p.name for p in paths] == ["path_kl.pdf", "path_kl.png"]
    pdf = paths[0].read_bytes()
    assert pdf[:5] == b"%PDF-" and b"/Subtype /Image" not in pdf  # vector: no raster image
    assert _png_size(paths[1]) == (round(FIGSIZE[0] * 300), round(FIGSIZE[1] * 300))


def test_series_layout_fit_window_legend_triangles_ticks_hollow(paper_style):
    fig = _compose(
        _path_kl_like(), xlabel="steps $T$", ylabel="KL", slopes=[(-1.0, True), (-2.0, False)]
    )
    fig.draw_without_rendering()
    ax = fig.axes[0]
    fits = _gid(ax.lines, "fit")  # drawn over their windows only
    assert [(f.get_xdata().min(), f.get_xdata().max()) for f in fits] == [
        pytest.approx((32.0, 1024.0)),
        pytest.approx((64.0, 1024.0)),
    ]
    np.testing.assert_allclose(fits[1].get_ydata(), 0.3 * fits[1].get_xdata() ** -2.0)
    hollow = _gid(ax.lines, "series-hollow")  # T = 8, 16 of the second series, open markers
    assert len(hollow) == 1 and list(hollow[0].get_xdata()) == [8.0, 16.0]
    assert hollow[0].get_markerfacecolor() == "white"
    assert sorted(len(line.get_xdata()) for line in _gid(ax.lines, "series-points")) == [6, 8]
    # triangles: one solid, one dashed, hypotenuses falling with slopes -1 and -2 in log-log
    tri = _gid(ax.lines, "slope-triangle")
    assert len(tri) == 2 and tri[0].get_linestyle() == "-" and tri[1].get_linestyle() == "--"
    for line, s in zip(tri, (-1.0, -2.0), strict=True):
        (x0, y0), (x1, y1) = np.log(line.get_xydata()[[0, 2]])
        assert (y1 - y0) / (x1 - x0) == pytest.approx(s, rel=1e-6)
    labels = _gid(ax.texts, "slope-label")
    assert sorted(t.get_text() for t in labels) == ["1", "1", "1", "2"]
    # nothing overlaps: legend (inside the axes) vs data, triangles, labels
    data = _data_fractions(ax)
    legend = _box(ax, ax.get_legend())
    assert 0 <= legend[0] and legend[2] <= 1 and 0 <= legend[1] and legend[3] <= 1
    assert _count_inside(data, legend) == 0
    boxes = [_box(ax, a) for a in tri + labels]
    assert not any(_overlap(legend, b) for b in boxes)
    for line in tri:
        assert _count_inside(data, _box(ax, line)) == 0
    text = [_box(ax, t) for t in labels]
    assert not any(_overlap(a, b) for i, a in enumerate(text) for b in text[i + 1 :])
    # minor ticks on both log axes, inside the view
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        minor = [v for v in axis.get_minorticklocs() if lo <= v <= hi]
        assert len(minor) >= 8
    assert list(ax.get_xticks()) == list(T)  # measured step counts label the x axis


def test_linear_axes_hlines_and_local_slopes(tmp_path, paper_style):
    levels = np.arange(1, 9)
    cas = 1.0 + 1e-3 * np.sin(levels)
    als = 1.0 + 0.08 * np.log(levels)
    series = [
        Series("cas", levels, cas, style="cas"),
        Series("als", levels, als, style="als"),
        Series("als prediction", levels, 1 + 0.08 * np.log(levels), kind="dashed", style="als"),
    ]
    fig = _compose(
        series,
        xlabel="level",
        ylabel="ratio",
        xlog=False,
        ylog=False,
        hlines=[(1.0, "on the schedule")],
    )
    fig.draw_without_rendering()
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "linear"
    assert list(ax.get_xticks()) == list(levels)  # integer levels label the axis
    (hline,) = _gid(ax.lines, "hline")
    assert list(hline.get_ydata()) == [1.0, 1.0]
    (label,) = _gid(ax.texts, "hline-label")
    box, legend = _box(ax, label), _box(ax, ax.get_legend())
    assert label.get_text() == "on the schedule" and not _overlap(box, legend)
    assert _count_inside(_data_fractions(ax), box) == 0
    assert 0 < box[1] and box[3] < 1
    assert _count_inside(_data_fractions(ax), legend) == 0
    (dashed,) = _gid(ax.lines, "series-dashed")
    assert dashed.get_linestyle() == "--"
    with pytest.raises(ValueError, match="log-log"):
        plot_series(series, tmp_path / "x", xlabel="", ylabel="", xlog=False, slopes=(1,))

    mid = np.sqrt(T[:-1] * T[1:])
    p = [
        Series("ddim", mid, -1 - 1 / mid, style="ddim"),
        Series("li-accel-ddim", mid, -2 + 3 / np.sqrt(mid), style="li-accel-ddim"),
    ]
    (png,) = plot_local_slopes(p, tmp_path / "slopes", expected=(-1, -2), formats=("png",))
    assert png.name == "slopes.png" and _png_size(png)[0] == round(FIGSIZE[0] * 300)


def test_local_slopes_axes(paper_style):
    mid = np.sqrt(T[:-1] * T[1:])
    fig = _local_slopes_figure([Series("ddim", mid, -1 - 0.01 / mid, style="ddim")], (-1,))
    fig.draw_without_rendering()
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert hi - lo >= 1.0 and lo < -1.0 < hi  # a flat curve is not magnified into noise
    assert [t.get_text() for t in _gid(ax.texts, "hline-label")] == ["expected \N{MINUS SIGN}1"]
    assert len([v for v in ax.xaxis.get_minorticklocs() if 8 <= v <= 1024]) >= 8


def test_crowded_integer_ticks_fall_back_and_validation(tmp_path, paper_style):
    x = np.arange(100.0, 109.0)  # nine integers too close on a log axis to label each
    fig = _compose([Series("a", x, 1 / x)], xlabel="x", ylabel="y")
    fig.draw_without_rendering()
    assert isinstance(fig.axes[0].xaxis.get_major_locator(), LogLocator)
    bad = [
        (dict(kind="bars"), "kind must be one of"),
        (dict(y=[1.0, 2.0]), "y must have length 3"),
        (dict(yerr=[0.1, -0.1, 0.1]), "yerr must be >= 0"),
        (dict(fit=(-1.0, 0.0, 10.0, 5.0)), "0 < x_lo < x_hi"),
        (dict(kind="line", hollow=[True, False, False]), "hollow applies"),
        (dict(x="abc"), "x must be a sequence of numbers"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            Series(**{"label": "s", "x": [1.0, 2.0, 3.0], "y": [1.0, 0.5, 0.3], **kw})
    s = [Series("s", [1.0, 2.0], [1.0, 0.5])]
    for kw, msg in (
        (dict(slopes=(0,)), "non-zero"),
        (dict(hlines=[(0.0, "zero")]), "> 0 on a log axis"),
        (dict(formats=("jpg",)), "formats must be"),
    ):
        with pytest.raises(ValueError, match=msg):
            plot_series(s, tmp_path / "bad", xlabel="", ylabel="", **kw)
    with pytest.raises(ValueError, match="nothing to draw"):
        plot_series([Series("s", [1.0, 2.0], [0.0, -1.0])], tmp_path / "bad", xlabel="", ylabel="")
    assert not list(tmp_path.glob("bad.*"))  # validation comes before any file


def test_curves_use_the_same_core_nfe_line_over_the_scaled_window(analysis):
    """plot_curves' figures come from the generic core: ode-heun (2 NFE per step) has its
    fitted line over 2x its T window on the NFE axis, and the same line on both axes."""
    curves = [c for c in analysis.curves if c.key.metric == "kl"]
    heun = next(c for c in curves if c.key.sampler == "ode-heun")
    lo, hi = heun.fit.window
    with rc_context(STYLE):
        figs = {a: _draw_figure(curves, a, 1.96, "95%") for a in ("T", "NFE")}
    for axis, scale in (("T", 1), ("NFE", 2)):
        ax = figs[axis].axes[0]
        fit = [f for f in _gid(ax.lines, "fit") if f.get_color() == sampler_style("ode-heun")[0]]
        (f,) = fit
        assert (f.get_xdata().min(), f.get_xdata().max()) == pytest.approx((scale * lo, scale * hi))
        np.testing.assert_allclose(f.get_ydata(), 0.5 * (f.get_xdata() / scale) ** -4.0, rtol=1e-6)
        assert [t.get_text() for t in _gid(ax.texts, "slope-label")].count("4") == 1


# Machado, Oliveira & Fernandes (2009), severity 1, on linear RGB
_DEUTERANOPIA = ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413),
                 (-0.011820, 0.042940, 0.968881))  # fmt: skip
_PROTANOPIA = ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216),
               (-0.003882, -0.048116, 1.051998))  # fmt: skip


def _lab_as_seen(hex_colour: str, vision) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour as seen under a colour-vision matrix."""
    c = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    rgb = np.clip(np.asarray(vision) @ linear, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    v = xyz @ rgb / np.array([0.95047, 1.0, 1.08883])
    f = np.where(v > (6 / 29) ** 3, np.cbrt(v), v / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _min_distance(colours, vision) -> float:
    return min(
        float(np.linalg.norm(_lab_as_seen(a, vision) - _lab_as_seen(b, vision)))
        for i, a in enumerate(colours)
        for b in colours[i + 1 :]
    )


def test_samplers_that_share_figures_stay_apart_for_colour_blind_readers():
    """Delta E >= 15 between the colours of samplers drawn together, under simulated
    deuteranopia and protanopia (and normal vision); markers differ as well."""
    groups = [
        ("ddim", "ddpm", "li-accel-ddim", "li-accel-ddpm"),
        ("als", "cas"),
        ("ams", "pc"),
        ("em", "ggf"),
        ("ode-euler", "ode-heun", "ode-rk45"),
    ]
    for group in groups:
        colours = [sampler_style(n)[0] for n in group]
        for vision in (_DEUTERANOPIA, _PROTANOPIA, np.eye(3)):
            assert _min_distance(colours, vision) >= 15, (group, colours)
    # negative control: a red/green pair merges for a deuteranope
    assert _min_distance(["#d62728", "#2ca02c"], _DEUTERANOPIA) < 15
    assert _min_distance(["#d62728", "#2ca02c"], np.eye(3)) > 100


def test_open_markers_are_explained_in_the_legend(paper_style):
    x = np.array([8.0, 16, 32, 64])
    plain = _compose([Series("a", x, 1 / x)], xlabel="x", ylabel="y")
    flagged = _compose(
        [Series("a", x, 1 / x, hollow=[True, False, False, False])], xlabel="x", ylabel="y"
    )
    texts = [[t.get_text() for t in f.axes[0].get_legend().get_texts()] for f in (plain, flagged)]
    assert texts[0] == ["a"]  # control: nothing hollow, no entry
    assert texts[1] == ["a", "faded open marker = flagged point, not fitted"]


def test_a_crowded_figure_raises_its_y_axis_to_keep_the_legend_inside(paper_style):
    """Curves filling every corner: the legend stays inside the axes over no data (the y axis
    extended upwards), and the figure keeps its one-column size; a legend that would need more
    than twice the span goes under the axes within 15% of the figure's height (4 columns)."""
    x = np.array([8.0, 16, 32, 64, 128, 256])
    series = [Series(f"source {i}: slope -0.5", x, 10.0**-i * x**-0.5) for i in range(6)]
    series.append(Series("rising", x, 1e-6 * x**2.5))
    fig = _compose(series, xlabel="x", ylabel="y")
    fig.draw_without_rendering()
    ax = fig.axes[0]
    legend = _box(ax, ax.get_legend())
    assert 0 <= legend[1] and legend[3] <= 1 and _count_inside(_data_fractions(ax), legend) == 0
    assert tuple(fig.get_size_inches()) == pytest.approx(FIGSIZE)
    many = [Series(f"s{i}", x, 10.0**-i * x ** (-0.5 + (i % 2))) for i in range(12)]
    fig = _compose(many, xlabel="x", ylabel="y")
    fig.draw_without_rendering()
    (below,) = fig.legends
    height = below.get_window_extent().height / fig.dpi
    assert below._ncols == 4 and height <= 0.15 * fig.get_size_inches()[1]


def test_a_single_x_value_draws_without_warnings(paper_style):
    """One eps_score measured with exact (zero-width) error bars, as in a quick report: the
    frame is still set, no singular-limit warning from matplotlib's autoscaling."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = _compose(
            [Series("a", [0.05], [0.1], yerr=[0.0])],
            xlabel="x",
            ylabel="y",
            slopes=[(1.0, True)],
        )
        fig.draw_without_rendering()
    lo, hi = fig.axes[0].get_xlim()
    assert lo < 0.05 < hi
