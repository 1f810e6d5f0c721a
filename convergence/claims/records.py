"""The seed papers' claims as data: each record holds its own judge and studies.

Each ``PaperClaim`` names the paper, states the claim in our words, says how it is tested, lists
the sweep configs (``reports/configs/<name>.toml``) whose stored results decide it, the exact
side studies it also needs (``studies``: computations that are not a sweep over T, cached by the
report as JSON beside the results store), and the slopes at stake:

* ``bound``: what the theorem or paper claims, as a log-log slope in T (or the claimed range of a
  speed-up), per sampler;
* ``expected``: the order theory predicts on smooth targets with exact scores.

The measured values and verdicts are computed by ``convergence.claims.report`` from the stored
results; nothing here is a result. ``convergence claims``, the report and the tests iterate over
``CLAIMS``.

``quick_config`` reduces a config to the ``--quick`` version of the report: per sampler entry
the first two step counts up to 32 (a config whose smallest count is larger runs at a quarter
of it), the first target, the first two dimensions, the first two metrics, one seed (two when
the config is replicated, so bootstrap CIs still exist), n at most 1000, and the exact score
plus at most four perturbations spread over the list (a claim may also keep only its first k
sampler entries, ``quick_samplers``). It checks that the report builds and that every verdict is
computed, not the full numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from convergence.claims import judge_annealed as annealed
from convergence.claims import judge_errors as errors
from convergence.claims import judge_rates as rates
from convergence.claims import judge_speed as speed
from convergence.claims import learned
from convergence.claims import studies as st
from convergence.sweep.config import SweepConfig, load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "reports" / "configs"
QUICK_STEPS = 2
QUICK_MAX_STEPS = 32
QUICK_TARGETS = 1
QUICK_DIMS = 2
QUICK_METRICS = 2
QUICK_N = 1000
QUICK_PERTURBATIONS = 4


@dataclass(frozen=True)
class PaperClaim:
    """One claim of a seed paper and how the package tests it (module docstring)."""

    number: int
    id: str
    title: str
    paper: str
    statement: str
    setting: str
    configs: tuple[str, ...]
    metric: str
    bound: dict[str, float]  # sampler -> claimed slope in T (metric ``metric``)
    expected: dict[str, float]  # sampler -> expected slope in T on smooth targets
    judge: Callable | None = None  # judge(Context) -> findings.ClaimResult
    studies: tuple[st.Study, ...] = ()
    quick_samplers: int | None = None  # --quick keeps the first k sampler entries of a config
    regime: str | None = None  # how the tests here fall outside the paper's regime, if they do

    def config_paths(self, root: str | Path | None = None) -> list[Path]:
        base = Path(root) if root is not None else CONFIG_DIR
        return [base / f"{name}.toml" for name in self.configs]

    def load_configs(self, root: str | Path | None = None, *, quick: bool = False):
        """The validated sweep configs of this claim (reduced with ``quick``)."""
        configs = [load_config(p) for p in self.config_paths(root)]
        return [quick_config(c, self.quick_samplers) for c in configs] if quick else configs


REGIME_GGF = (
    "the paper's claim is for images (d >= 3072, CIFAR-10 and up); here d <= 64, where the MMD "
    "cannot resolve EM beyond a few steps and ggf is biased in low d"
)
REGIME_AMS = (
    "the paper's speed-up is for images (CIFAR-10 and up); here d <= 64 mixtures, with pc at "
    "one snr"
)
LI_2024 = "Li, Huang, Efimov, Wei, Chi & Chen, ICML 2024 (arXiv 2403.03852)"

CLAIMS: tuple[PaperClaim, ...] = (
    PaperClaim(
        1,
        "li-deterministic",
        "Accelerated deterministic sampler: TV O(1/T^2) against DDIM's O(1/T)",
        LI_2024,
        "li-accel-ddim converges in TV like T^-2, ddim like T^-1 (l2-accurate scores, no "
        "smoothness or log-concavity).",
        "Exact scores; a 1-D 3-component mixture (grid evaluator), the tensorised product:d=16 "
        "target (tensor evaluator) and the non-product gmm:d=8 (log-det tracking, 95% CIs); the "
        "uniform VP grid and the Li-Yan schedule; TV, KL and W2 where the evaluator gives them. "
        "Decisive (E1): the 1-D mixture to T = 4096 (uniform) and 8192 (Li-Yan) at t_end = 1e-2, "
        "1e-3, 1e-4, judged by the local slopes at the largest T; the fits over T <= 256 are "
        "context.",
        (
            "claim1_li_deterministic",
            "claim1_li_deterministic_li_yan",
            "claim1_li_deterministic_logdet",
            "claim1_asymptote_t1em2",
            "claim1_asymptote_t1em3",
            "claim1_asymptote_t1em4",
        ),
        "tv",
        {"li-accel-ddim": -2.0, "ddim": -1.0},
        {"li-accel-ddim": -2.0, "ddim": -1.0},
        quick_samplers=2,
        judge=rates.judge_li_deterministic,
    ),
    PaperClaim(
        2,
        "li-stochastic",
        "Accelerated stochastic sampler: TV O(1/T) against DDPM's O(1/sqrt T)",
        LI_2024,
        "li-accel-ddpm converges in TV like T^-1, ddpm like T^-1/2.",
        "Exact scores; the 1-D mixture (grid) and product:d=16 (tensor); uniform VP grid and "
        "Li-Yan schedule; TV and KL. Decisive (E1): the 1-D mixture to T = 4096 at t_end = 1e-2, "
        "1e-3, 1e-4 (as far as the grid's node limit allows), judged by the local slopes at the "
        "largest T.",
        (
            "claim2_li_stochastic",
            "claim2_asymptote_t1em2",
            "claim2_asymptote_t1em3",
            "claim2_asymptote_t1em4",
        ),
        "tv",
        {"li-accel-ddpm": -1.0, "ddpm": -0.5},
        {"li-accel-ddpm": -1.0, "ddpm": -1.0},
        quick_samplers=2,
        judge=rates.judge_li_stochastic,
    ),
    PaperClaim(
        3,
        "path-kl",
        "Why the 1/sqrt(T) bounds are loose: path KL against marginal KL",
        "Chen et al., ICLR 2023 (arXiv 2209.11215, Girsanov route); Li & Yan, ICLR 2025 "
        "(arXiv 2409.18959)",
        "The Girsanov route bounds the path-space KL, which decays only like 1/T; the KL of the "
        "final marginal decays like 1/T^2, so TV <= sqrt(KL/2) gives 1/T, not 1/sqrt(T).",
        "Gaussian targets (d = 1, 4): both KLs exact from joint Gaussians over the whole path "
        "(convergence.evaluators.path) and moment propagation, same chain (noisy last step).",
        ("claim3_path_kl",),
        "path-kl",
        {"ddpm": -1.0, "li-accel-ddpm": -1.0, "em": -1.0},
        {"ddpm": -1.0, "li-accel-ddpm": -1.0, "em": -1.0},
        judge=rates.judge_path_kl,
    ),
    PaperClaim(
        4,
        "score-error",
        "Score error: the plateau is set by the l2 score error (and the Jacobian error for ODEs)",
        f"{LI_2024}; Li, Wei, Chen & Chi, ICLR 2024 (arXiv 2306.09251)",
        "At large T the error is O(eps_score) for the stochastic samplers, while deterministic "
        "samplers also need an accurate Jacobian (sqrt(d) eps_score + d eps_Jacobi).",
        "1-D mixture (grid), T = 128, sine perturbations of equal amplitude at omega = 1 "
        "(smooth) and omega = 16 (high frequency); plateau slope against eps_score and "
        "eps_Jacobi (recorded over each sampler's own grid). Decisive (E2): T = 512, eps in "
        "{0.005, 0.01, 0.02, 0.04} x omega in {1, 2, 4, 8, 16} (eps omega <= 0.5), "
        "log TV = a + b log eps_score + c log eps_jacobi per sampler.",
        ("claim4_score_error", "claim4_separation"),
        "tv",
        {"ddim": 1.0, "ddpm": 1.0, "li-accel-ddim": 1.0, "li-accel-ddpm": 1.0},
        {"ddim": 1.0, "ddpm": 1.0, "li-accel-ddim": 1.0, "li-accel-ddpm": 1.0},
        quick_samplers=2,
        judge=errors.judge_score_error,
    ),
    PaperClaim(
        5,
        "dimension",
        "Dimension dependence of the bounds",
        "Li & Yan, ICLR 2025 (d/T); Li et al. 2024 (arXiv 2408.02320, d/T); Li, Wei, Chen & Chi "
        "2023 (d^2/T); Wu, Chen & Wei 2024 (arXiv 2410.04760, ~d^3 for the accelerated SDE)",
        "TV bounds grow like d (DDPM, Li-Yan; DDIM, Li et al. 2024b), d^2 (DDIM, Li et al. 2023) "
        "and about d^3 (accelerated SDE).",
        "Product targets up to d = 1024, measured exactly (tensor evaluator), T = 64 and 256; "
        "random non-product mixtures up to d = 32 by log-det tracking (ddim, li-accel-ddim, KL). "
        "Decisive beside the product rows (E3): the planted non-product family, whose mean "
        "separation and conditioning do not change with d, d = 2 .. 64, log-det TV and KL. "
        "Slopes are in d, not T.",
        ("claim5_dimension", "claim5_dimension_logdet", "claim5_dimension_planted"),
        "tv",
        {"ddpm": 1.0, "ddim": 1.0, "li-accel-ddim": 1.0, "li-accel-ddpm": 3.0},
        {"ddpm": 0.5, "ddim": 0.5, "li-accel-ddim": 0.5, "li-accel-ddpm": 0.5},
        judge=errors.judge_dimension,
    ),
    PaperClaim(
        6,
        "ggf",
        "Gotta Go Fast: 2-10x fewer score evaluations than Euler-Maruyama",
        "Jolicoeur-Martineau, Li, Piche-Taillefer, Kachman & Mitliagkas, 2021 (arXiv 2105.14080)",
        "The adaptive solver reaches the quality of Euler-Maruyama with 2-10 times fewer score "
        "evaluations, needs no step-size tuning (eps_rel) and rarely rejects a step.",
        "A 2-D 3-component mixture on VP and VE, MMD of n = 2000 samples (closed-form mixture "
        "terms, noise floor stated), 3 seeds; em, pc, ode-rk45 and ddim (VP) as in the paper; "
        "ggf at eps_rel 0.01-0.1 (the paper's sweep).",
        ("claim6_ggf", "claim6_ggf_ddim"),
        "mmd",
        {"ggf": 2.0},  # claimed speed-up range: 2 to 10
        {},
        studies=(st.GGF_REJECTIONS,),
        quick_samplers=2,
        judge=speed.judge_ggf,
        regime=REGIME_GGF,
    ),
    PaperClaim(
        7,
        "ams",
        "Adaptive momentum: 2-5x faster Langevin-type sampling",
        "Wen, Deng, Luo, Sun & Li, 2024 (arXiv 2405.13726)",
        "Adding the adaptive momentum to the Langevin corrector of a predictor-corrector sampler "
        "reaches a given quality with 2-5 times fewer steps at small step counts, and converges.",
        "ams against pc (same snr 0.16) on VE and VP, mixtures in d = 2 and 64, MMD of samples, "
        "3 seeds; plus fixed Gaussian targets of growing condition number: Langevin with and "
        "without the adaptive momentum (stationary bias against h, iterations to accuracy "
        "against kappa).",
        ("claim7_ams",),
        "mmd",
        {"ams": 2.0},  # claimed speed-up range: 2 to 5
        {},
        studies=(st.MOMENTUM,),
        judge=speed.judge_ams,
        regime=REGIME_AMS,
    ),
    PaperClaim(
        8,
        "annealed",
        "Consistent annealed sampling keeps the noise on the schedule",
        "Jolicoeur-Martineau, Piche-Taillefer, Tachet des Combes & Mitliagkas, ICLR 2021 "
        "(arXiv 2009.05475)",
        "CAS keeps the sample's noise level on the geometric schedule (ALS does not), and "
        "denoising the final sample matters much for ALS, little for CAS.",
        "VE, 1-D mixture: TV and KL against the number of levels L (grid, exact); with and "
        "without the final denoise by the 1-D Wasserstein distance of samples (3 seeds); the "
        "noise level per level propagated exactly (convergence.noise_levels). Decisive (E5): "
        "TV against L = 16 .. 1024 with CAS at its paper's step (eta = 1.55 (1 - gamma)) and ALS "
        "at NCSNv2's (eta = 0.062, 5 steps per level), CAS at eta near 1 and ALS at eta = 1 as "
        "controls.",
        ("claim8_annealed", "claim8_annealed_denoised", "claim8_annealed_paper"),
        "tv",
        {},
        {},
        studies=(st.NOISE_LEVELS,),
        judge=annealed.judge_annealed,
    ),
    PaperClaim(
        9,
        "orders",
        "Baseline orders: every sampler's declared order",
        "the samplers' declared weak orders (docs/samplers.md) and the classical theory of "
        "one-step methods",
        "Each sampler converges at its declared weak order p: W2 like T^-p and KL like T^-2p; "
        "ode-rk45's error follows its tolerance.",
        "Gaussian targets in d = 1, 2, exact moment propagation, VP; the sympy leading term "
        "C T^-p (analytic.symbolic) drawn for ddim, ddpm, ode-euler and ode-heun in d = 1; "
        "ode-rk45 by its pathwise distance to the exact flow (an upper bound on W2, no floor).",
        ("claim9_orders", "claim9_symbolic"),
        "w2",
        {},
        {},
        studies=(st.RK45_TOLERANCE, st.SYMBOLIC),
        judge=rates.judge_orders,
    ),
    PaperClaim(
        10,
        "learned",
        "Learned scores: the network's score error sets the plateau",
        f"{LI_2024} (the l2-accurate score assumption); issue 7",
        "With a learned score the error decays with T until the discretisation error falls "
        "below the score error, then plateaus at a level set by eps_score.",
        "product:d=16 (VP): exact score, two networks of `convergence train` (default recipe, "
        "600 and 6000 steps: reports/networks/product_d16_vp_600.pt with all four samplers, "
        "product_d16_vp.pt with ddim and ddpm; eps_score(t) of each measured by Monte Carlo "
        "over exact draws of q_t, 95% CI) and constant bias fields of known eps_score; all by "
        "the MMD of n = 2000 samples (closed-form mixture terms, noise floor stated), exact and "
        "bias runs also exactly in KL (tensor). Measured exactly (E6): networks (width 128) on "
        "gmm:d=1,k=3,seed=0 (300 and 3000 training steps) with ddim and ddpm, exact TV and KL on "
        "the grid to T = 128 / 256, and on gmm:d=2,k=3,seed=0 (3000 steps) with ddim, TV by the "
        "log-det evaluator (n = 20000; the grid cannot follow that network's far tails); beside "
        "bias fields of the same eps_score and sine fields of the same eps_score and eps_jacobi.",
        (
            "claim10_learned",
            "claim10_learned_long",
            "claim10_learned_exact",
            "claim10_learned_grid",
            "claim10_learned_logdet",
        ),
        "mmd",
        {},
        {},
        studies=(st.LEARNED_ERROR,),
        quick_samplers=1,
        judge=learned.judge_learned,
    ),
)


def get_claim(key: str | int) -> PaperClaim:
    """The claim with this id or number."""
    for c in CLAIMS:
        if key in (c.id, c.number, str(c.number)):
            return c
    raise ValueError(f"unknown claim {key!r}; allowed: {', '.join(c.id for c in CLAIMS)}")


def _quick_steps(steps: tuple[int, ...]) -> tuple[int, ...]:
    kept = [s for s in steps if s <= QUICK_MAX_STEPS][:QUICK_STEPS]
    return tuple(kept) or (max(1, min(steps) // 4),)


def _spread(items: list, k: int) -> list:
    """At most k items, evenly spread over the list (first and last kept)."""
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def quick_config(config: SweepConfig, samplers: int | None = None) -> SweepConfig:
    """The reduced ``--quick`` version of a sweep config (module docstring), keeping only the
    first ``samplers`` sampler entries when given."""
    entries = config.samplers[:samplers] if samplers else config.samplers
    samplers = tuple(dataclasses.replace(s, steps=_quick_steps(s.steps)) for s in entries)
    dims = config.dimensions[:QUICK_DIMS]
    first = config.targets[:QUICK_TARGETS]
    grid = tuple(
        (t, d)
        for t, d in config.grid_targets
        if (not dims or d in dims) and any(t == f.replace("{d}", str(d)) for f in first)
    )
    perturbed = [p for p in config.perturbations if p is not None]
    exact = [None] if None in config.perturbations else []
    return dataclasses.replace(
        config,
        name=f"{config.name}-quick",
        samplers=samplers,
        targets=first,
        dimensions=dims,
        grid_targets=grid,
        metrics=config.metrics[:QUICK_METRICS],
        seeds=config.seeds[: 2 if len(config.seeds) > 1 else 1],
        n=min(config.n, QUICK_N),
        perturbations=tuple(exact + _spread(perturbed, QUICK_PERTURBATIONS)),
    )
