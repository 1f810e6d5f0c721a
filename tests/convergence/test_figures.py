"""Figures of a sweep analysis (convergence.figures) on synthetic records with known slopes."""

import math
import struct

import pytest

from convergence.analysis import analyse
from convergence.figures import FIGSIZE, plot_curves, sampler_style
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
    """Seven samplers: no corner of the axes is free, the legend goes under them and the figure
    grows taller (the width stays one column)."""
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
    assert width == round(FIGSIZE[0] * 300) and height > round(FIGSIZE[1] * 300) + 150
    with pytest.raises(ValueError, match="formats must be"):
        plot_curves(analyse(recs), tmp_path, formats=("jpg",))


def test_every_registered_sampler_has_its_own_style():
    styles = {name: sampler_style(name) for name in REGISTRY}
    assert len({c for c, _, _ in styles.values()}) == len(REGISTRY)  # distinct colours
    assert len({(m, f) for _, m, f in styles.values()}) == len(REGISTRY)  # distinct markers
    assert sampler_style("ddim") == styles["ddim"]  # stable
    assert sampler_style("not-registered")[0].startswith("#")
