"""Perturbed scores: the exact mixture score plus an error field of known size.

A perturbed score is s(x, t) = grad log q_t(x) + delta(x, t) with q_t the exact noised marginal of
a GaussianMixture target (THEORY.md 3.1) and delta one of the fields below (THEORY.md 2.2, "Score
perturbations"; issue 4). Spec strings ``kind:key=value,...``:

* ``bias:eps=E``: delta = E u, u = (1, ..., 1) / sqrt(d), so |delta| = E.
* ``sin:eps=E,omega=W[,phase=P]``: delta_i = E sqrt(2/d) sin(W x_i + P), coordinate-wise; the
  factor sqrt(2/d) makes the RMS size about E for spread-out x.
* ``sigma-power:eps=E,power=P[,omega=W,phase=Q]``: (1/sigma(t))^P times the bias field, or the
  sin field when omega is given: an error growing at small noise as real networks' errors do.
* ``mixture:weights=A,means=B,covs=C[,seed=S]``: the exact score of a "wrong" mixture with
  weights w_k exp(A z_k) renormalised, means mu_k + B xi_k and covariances Sigma_k exp(C zeta_k),
  where z (K,), xi (K, d), zeta (K,) are standard normal, drawn in that order from numpy's
  default_rng(S); delta = grad log q~_t - grad log q_t at every t.
* ``learned:CKPT``: a network trained by ``convergence train`` (convergence.learned.perturbation),
  delta = s_theta - grad log q_t.

``score_error`` gives the sizes a theorem needs (THEORY.md 2.4 item 5) over a sampler's time grid
t_1..t_m:

    eps_score^2  = (1/m) sum_j E_{X ~ q_{t_j}} |delta(X, t_j)|^2,
    eps_jacobi^2 = (1/m) sum_j E_{X ~ q_{t_j}} ||grad_x delta(X, t_j)||_F^2,

in closed form for the bias, sin and sigma-power fields, by Monte Carlo with a 95% CI for wrong
mixtures.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np
import torch

from analytic.gmm import GaussianMixture
from analytic.processes import Process, Time

Tensor = torch.Tensor
Score = Callable[[Tensor, Time], Tensor]

PERTURBATIONS: dict[str, str] = {
    "bias": "constant field eps (1,...,1)/sqrt(d); keys eps",
    "sin": "eps sqrt(2/d) sin(omega x_i + phase) per coordinate; keys eps, omega[, phase]",
    "sigma-power": "(1/sigma(t))^power times the bias field, or the sin field when omega is "
    "given; keys eps, power[, omega, phase]",
    "mixture": "exact score of a mixture with perturbed weights/means/covariances; "
    "keys weights, means, covs[, seed]",
    "learned": "a trained network (convergence train): learned:CKPT or "
    "learned:path=CKPT,device=auto|cpu|cuda",
}
_Z95 = 1.96
_CHUNK = 2**22  # Monte Carlo: at most this many Jacobian entries (rows x K x d x d) at once


def _fmt(v: float | int) -> str:
    """Shortest round-trip text of a number, without a trailing '.0' (4.0 -> '4')."""
    s = repr(v)
    return s[:-2] if s.endswith(".0") else s


def _check(name: str, value, rule: str) -> float:
    """value as a finite float obeying rule ('any', '>= 0' or '> 0'), else a one-line ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if (rule == ">= 0" and value < 0) or (rule == "> 0" and value <= 0):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return float(value)


def _set(obj, name: str, rule: str) -> None:
    """Validate a number field of a frozen dataclass in place (ints become floats)."""
    object.__setattr__(obj, name, _check(name, getattr(obj, name), rule))


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _time_coefficient(value: Time, x: Tensor, extra: int) -> Time:
    """A coefficient of t shaped to broadcast against x (..., d) (extra=1) or a Jacobian
    (..., d, d) (extra=2): a float stays a float, a 0-dim tensor stays 0-dim, per-sample values
    (n,) for x of shape (n, d) become (n, 1) or (n, 1, 1). Same conventions as
    GaussianMixture.score_fn."""
    if not isinstance(value, Tensor):
        return value
    value = value.to(dtype=x.dtype, device=x.device)
    if value.ndim == 0:
        return value
    if x.ndim == 2 and value.numel() == x.shape[0]:
        return value.reshape(-1, *([1] * extra))
    if value.numel() == 1:
        return value.reshape(())
    raise ValueError(f"per-sample times need x of shape (n, d) with n = {value.numel()}")


def _coordinate_variances(q: GaussianMixture) -> Tensor:
    """Per-coordinate variances (K, d) of the components of q: the diagonals of C_k, O(K d)."""
    if q.kind == "isotropic":
        return q.cov[:, None].expand(-1, q.dim)
    return q.cov if q.kind == "diagonal" else q.cov.diagonal(dim1=-2, dim2=-1)


class Perturbation(ABC):
    """An error field delta(x, t) added to the exact score: s = grad log q_t + delta.

    ``delta`` uses plain differentiable torch ops (autograd, forward AD and torch.func.jvp/vmap
    work through it); t is a float or 0-dim tensor (one time for the batch) or a per-sample (n,)
    tensor for x of shape (n, d); dtype and device follow x.
    """

    kind: ClassVar[str]
    keys: ClassVar[dict[str, type]]  # spec keys and their types
    required: ClassVar[tuple[str, ...]]
    dim: int  # a dataclass field or a property of the concrete classes
    # Monte Carlo budget of score_error_on_schedule (samples per time, times) without closed form
    mc_samples: ClassVar[int] = 20000
    mc_times: ClassVar[int] = 200

    @property
    @abstractmethod
    def spec(self) -> str:
        """Canonical spec string (parse_perturbation(p.spec, target) == p)."""

    @property
    @abstractmethod
    def separable(self) -> bool:
        """True when coordinate i of delta depends only on x_i (and t)."""

    @abstractmethod
    def delta(self, x: Tensor, t: Time, process: Process) -> Tensor:
        """delta(x, t), shape (..., d) like x."""

    @abstractmethod
    def jacobian(self, x: Tensor, t: Time, process: Process) -> Tensor:
        """grad_x delta(x, t) in closed form, (..., d, d): entry [i, j] = d delta_i / d x_j."""

    def moments(self, q: GaussianMixture, t: float, process: Process) -> tuple[float, float] | None:
        """(E_q |delta(X, t)|^2, E_q ||grad delta(X, t)||_F^2) in closed form, or None."""
        return None

    def replacement_score(self, process: Process) -> Score | None:
        """A direct score function equal to grad log q_t + delta (cheaper than the sum, e.g. a
        wrong mixture's own score or a network), or None to add delta to the exact score."""
        return None

    def coordinate(self, i: int) -> Perturbation:
        """The 1-D perturbation acting on coordinate i (separable perturbations only)."""
        if not self.separable:
            raise ValueError(f"perturbation {self.spec!r} is not coordinate-separable")
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.dim:
            raise ValueError(f"coordinate index must be an integer in [0, {self.dim}), got {i!r}")
        return self._coordinate(i)

    def _coordinate(self, i: int) -> Perturbation:
        raise NotImplementedError

    @classmethod
    def for_target(cls, target: GaussianMixture, **params) -> Perturbation:
        return cls(dim=target.dim, **params)

    def _check_x(self, x: Tensor) -> None:
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., {self.dim}), got {tuple(x.shape)}")


class _Field(Perturbation):
    """Explicit fields of x (and sigma(t)) with an amplitude eps; coordinate i of such a field in
    d dimensions is the same field in 1-D with amplitude eps / sqrt(d)."""

    separable = True

    @property
    def spec(self) -> str:
        params = [(k, getattr(self, k)) for k in self.keys]
        text = ",".join(
            f"{k}={_fmt(v)}" for k, v in params if v is not None and (k, v) != ("phase", 0.0)
        )
        return f"{self.kind}:{text}"

    def _coordinate(self, i: int) -> Perturbation:
        return replace(self, dim=1, eps=self.eps / math.sqrt(self.dim))


@dataclass(frozen=True)
class Bias(_Field):
    """delta = eps u with u = (1, ..., 1) / sqrt(d): |delta| = eps, grad delta = 0 (exact sizes
    eps_score = eps, eps_jacobi = 0)."""

    dim: int
    eps: float

    kind = "bias"
    keys = {"eps": float}
    required = ("eps",)

    def __post_init__(self) -> None:
        _check_int("dim", self.dim, 1)
        _set(self, "eps", ">= 0")

    def delta(self, x: Tensor, t: Time, process: Process) -> Tensor:
        self._check_x(x)
        return 0.0 * x + self.eps / math.sqrt(self.dim)  # 0 x: keeps delta in x's autograd graph

    def jacobian(self, x: Tensor, t: Time, process: Process) -> Tensor:
        self._check_x(x)
        return x.new_zeros(*x.shape, self.dim)

    def moments(self, q: GaussianMixture, t: float, process: Process) -> tuple[float, float]:
        return self.eps**2, 0.0


@dataclass(frozen=True)
class Sine(_Field):
    """delta_i(x) = eps sqrt(2/d) sin(omega x_i + phase); grad delta = diag(eps sqrt(2/d) omega
    cos(omega x_i + phase)).

    Exact sizes under a mixture q = sum_k w_k N(m_k, C_k): coordinate i of component k is
    N(m_ki, v_ki) with v_ki = (C_k)_ii, and E cos(2 omega X + 2 phase) = exp(-2 omega^2 v)
    cos(2 omega m + 2 phase) (the Gaussian characteristic function), so with
    c_ki = exp(-2 omega^2 v_ki) cos(2 omega m_ki + 2 phase):
        E |delta|^2        = eps^2 (2/d) sum_k w_k sum_i (1 - c_ki) / 2,
        E ||grad delta||^2 = eps^2 (2/d) omega^2 sum_k w_k sum_i (1 + c_ki) / 2.    O(K d).
    """

    dim: int
    eps: float
    omega: float
    phase: float = 0.0

    kind = "sin"
    keys = {"eps": float, "omega": float, "phase": float}
    required = ("eps", "omega")

    def __post_init__(self) -> None:
        _check_int("dim", self.dim, 1)
        _set(self, "eps", ">= 0")
        _set(self, "omega", "> 0")
        _set(self, "phase", "any")

    @property
    def _amplitude(self) -> float:
        return self.eps * math.sqrt(2.0 / self.dim)

    def delta(self, x: Tensor, t: Time, process: Process) -> Tensor:
        self._check_x(x)
        return self._amplitude * torch.sin(self.omega * x + self.phase)

    def jacobian(self, x: Tensor, t: Time, process: Process) -> Tensor:
        self._check_x(x)
        return torch.diag_embed(
            self._amplitude * self.omega * torch.cos(self.omega * x + self.phase)
        )

    def moments(self, q: GaussianMixture, t: float, process: Process) -> tuple[float, float]:
        c = torch.exp(-2.0 * self.omega**2 * _coordinate_variances(q)) * torch.cos(
            2.0 * self.omega * q.means + 2.0 * self.phase
        )
        mean_sin2 = float(q.weights @ (0.5 * (1.0 - c)).sum(-1))
        mean_cos2 = float(q.weights @ (0.5 * (1.0 + c)).sum(-1))
        a2 = self._amplitude**2
        return a2 * mean_sin2, a2 * self.omega**2 * mean_cos2


@dataclass(frozen=True)
class SigmaPower(_Field):
    """delta(x, t) = (1/sigma(t))^power f(x) with f the Sine field when omega is given, else the
    Bias field, both of amplitude eps. Its sizes at time t are those of f times
    (1/sigma(t))^(2 power), exact."""

    dim: int
    eps: float
    power: float
    omega: float | None = None
    phase: float = 0.0

    kind = "sigma-power"
    keys = {"eps": float, "power": float, "omega": float, "phase": float}
    required = ("eps", "power")

    def __post_init__(self) -> None:
        _check_int("dim", self.dim, 1)
        _set(self, "eps", ">= 0")
        _set(self, "power", "any")
        _set(self, "phase", "any")
        if self.omega is not None:
            _set(self, "omega", "> 0")
        elif self.phase != 0.0:
            raise ValueError("phase needs omega (the bias field has no phase)")

    @property
    def base(self) -> Bias | Sine:
        """The unit-in-time field f."""
        if self.omega is None:
            return Bias(self.dim, self.eps)
        return Sine(self.dim, self.eps, self.omega, self.phase)

    def _factor(self, x: Tensor, t: Time, process: Process, extra: int) -> Time:
        return _time_coefficient(process.sigma(t), x, extra) ** (-self.power)

    def delta(self, x: Tensor, t: Time, process: Process) -> Tensor:
        return self._factor(x, t, process, 1) * self.base.delta(x, t, process)

    def jacobian(self, x: Tensor, t: Time, process: Process) -> Tensor:
        return self._factor(x, t, process, 2) * self.base.jacobian(x, t, process)

    def moments(self, q: GaussianMixture, t: float, process: Process) -> tuple[float, float]:
        scale = process.sigma(float(t)) ** (-2.0 * self.power)
        s2, j2 = self.base.moments(q, t, process)
        return scale * s2, scale * j2


@dataclass(frozen=True)
class WrongMixture(Perturbation):
    """delta = grad log q~_t - grad log q_t, q~ the target with perturbed parameters (module
    docstring); grad delta = hess log q~_t - hess log q_t (THEORY.md 3.1). ``wrong`` is q~ itself
    (the law an exact sampler with this score converges to). Sizes by Monte Carlo."""

    target: GaussianMixture = field(compare=False, repr=False)
    weights: float = 0.0
    means: float = 0.0
    covs: float = 0.0
    seed: int = 0
    wrong: GaussianMixture = field(init=False, compare=False, repr=False)

    kind = "mixture"
    keys = {"weights": float, "means": float, "covs": float, "seed": int}
    required = ()

    def __post_init__(self) -> None:
        for name in ("weights", "means", "covs"):
            _set(self, name, ">= 0")
        _check_int("seed", self.seed, 0)
        q = self.target
        K, d = q.n_components, q.dim
        rng = np.random.default_rng(self.seed)
        z, xi, zeta = (
            torch.from_numpy(a)
            for a in (rng.standard_normal(K), rng.standard_normal((K, d)), rng.standard_normal(K))
        )
        w = q.weights * torch.exp(self.weights * z)
        scale = torch.exp(self.covs * zeta).reshape(K, *([1] * (q.cov.ndim - 1)))
        wrong = GaussianMixture(w / w.sum(), q.means + self.means * xi, q.cov * scale)
        object.__setattr__(self, "wrong", wrong)

    @classmethod
    def for_target(cls, target: GaussianMixture, **params) -> WrongMixture:
        return cls(target, **params)

    @property
    def spec(self) -> str:
        return (
            f"mixture:weights={_fmt(self.weights)},means={_fmt(self.means)},"
            f"covs={_fmt(self.covs)},seed={self.seed}"
        )

    @property
    def dim(self) -> int:
        return self.target.dim

    @property
    def separable(self) -> bool:
        return self.target.dim == 1  # product targets would make it separable in any d

    def _coordinate(self, i: int) -> Perturbation:
        return self

    def replacement_score(self, process: Process) -> Score:
        return self.wrong.score_fn(process)

    def delta(self, x: Tensor, t: Time, process: Process) -> Tensor:
        return self.wrong.score_fn(process)(x, t) - self.target.score_fn(process)(x, t)

    def jacobian(self, x: Tensor, t: Time, process: Process) -> Tensor:
        return group_by_time(self._jacobian_at, x, t, process)

    def _jacobian_at(self, x: Tensor, t: float, process: Process) -> Tensor:
        return self.wrong.noised(process, t).hessian(x) - self.target.noised(process, t).hessian(x)


def group_by_time(
    fn: Callable[[Tensor, float, Process], Tensor], x: Tensor, t: Time, process: Process
) -> Tensor:
    """fn(x, t, process) -> (n, d, d) for one time, applied to per-sample times t (n,) by
    grouping the rows of x (n, d) that share a time (the result is not differentiable in t)."""
    if isinstance(t, Tensor) and t.numel() > 1:
        out = x.new_empty(*x.shape, x.shape[-1])
        for u in torch.unique(t):
            rows = t == u
            out[rows] = fn(x[rows], float(u), process)
        return out
    return fn(x, float(t), process)


def same_mixture(a, b) -> bool:
    """Whether two mixtures (GaussianMixture or ProductMixture) are of one type with equal
    weights, means and covariances (variances of the factors for a product), exactly."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    spread = "variances" if hasattr(a, "variances") else "cov"
    pairs = [(a.weights, b.weights), (a.means, b.means), (getattr(a, spread), getattr(b, spread))]
    return all(u.shape == v.shape and torch.equal(u, v) for u, v in pairs)


KINDS: dict[str, type[Perturbation] | None] = {
    **{cls.kind: cls for cls in (Bias, Sine, SigmaPower, WrongMixture)},
    "learned": None,  # convergence.learned.perturbation.LearnedScore, imported when first used
}


def _kind(kind: str) -> type[Perturbation]:
    if kind == "learned":
        from convergence.learned.perturbation import LearnedScore

        return LearnedScore
    return KINDS[kind]


def parse_perturbation(spec: str, target: GaussianMixture) -> Perturbation:
    """The perturbation named by ``kind:key=value,...`` (module docstring) for ``target``."""
    cls, params = perturbation_fields(spec)
    try:
        return cls.for_target(target, **params)
    except ValueError as err:
        raise ValueError(f"perturbation {spec!r}: {err}") from None


def perturbation_fields(spec: str) -> tuple[type[Perturbation], dict]:
    """The class and the checked, typed parameters a ``kind:key=value,...`` spec names, without
    building the perturbation (no target needed, no checkpoint loaded)."""
    kind, _, rest = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation {kind!r} in {spec!r}; allowed: {', '.join(KINDS)}")
    cls = _kind(kind)
    if kind == "learned" and not rest.startswith("path="):
        rest = f"path={rest}"  # the short form learned:CKPT
    params: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in cls.keys or key in params:
            raise ValueError(
                f"bad parameter {item!r} in perturbation {spec!r}; {kind} takes "
                f"{', '.join(cls.keys)} (each once)"
            )
        try:
            params[key] = cls.keys[key](value)
        except ValueError:
            what = "an integer" if cls.keys[key] is int else "a number"
            raise ValueError(
                f"parameter {key} of perturbation {spec!r} must be {what}, got {value!r}"
            ) from None
    missing = [k for k in cls.required if k not in params]
    if missing:
        raise ValueError(f"perturbation {spec!r} is missing {', '.join(missing)}")
    return cls, params


def _check_compatible(target: GaussianMixture, p: Perturbation) -> None:
    if hasattr(p, "target"):  # built for one target (a wrong mixture, a network)
        if not same_mixture(p.target, target):
            raise ValueError(f"perturbation {p.spec!r} was built for another target")
    elif p.dim != target.dim:
        raise ValueError(f"perturbation {p.spec!r} is {p.dim}-dimensional, target is {target.dim}")


def perturbed_score(
    target: GaussianMixture, process: Process, perturbation: Perturbation | None
) -> Score:
    """score(x, t) = grad log q_t(x) + delta(x, t); the exact score when perturbation is None.

    Same t conventions as GaussianMixture.score_fn (a float, or per-sample (n,) times). A
    perturbation with a direct score (a wrong mixture's own exact score, a network) returns that
    (equal to the sum, cheaper).
    """
    exact = target.score_fn(process)
    if perturbation is None:
        return exact
    _check_compatible(target, perturbation)
    direct = perturbation.replacement_score(process)
    if direct is not None:
        return direct

    def score(x: Tensor, t: Time) -> Tensor:
        return exact(x, t) + perturbation.delta(x, t, process)

    return score


@dataclass(frozen=True)
class ScoreError:
    """Sizes of a score error over a time grid (module docstring for the formulas).

    ``eps_score_ci`` / ``eps_jacobi_ci`` are half-widths of 95% confidence intervals (0 when
    ``exact``); ``eps_score2_t`` / ``eps_jacobi2_t`` the per-time terms E|delta|^2 and
    E||grad delta||_F^2 at ``times`` and ``eps_score2_t_ci`` / ``eps_jacobi2_t_ci`` their 95%
    half-widths; ``n_samples`` the Monte Carlo samples per time (0 if exact).
    """

    eps_score: float
    eps_jacobi: float
    eps_score_ci: float
    eps_jacobi_ci: float
    exact: bool
    method: str
    spec: str = ""
    n_samples: int = 0
    times: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)
    eps_score2_t: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)
    eps_jacobi2_t: np.ndarray = field(
        default_factory=lambda: np.zeros(0), compare=False, repr=False
    )
    eps_score2_t_ci: np.ndarray = field(
        default_factory=lambda: np.zeros(0), compare=False, repr=False
    )
    eps_jacobi2_t_ci: np.ndarray = field(
        default_factory=lambda: np.zeros(0), compare=False, repr=False
    )

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in out.items()}


def _check_times(times: Sequence[float]) -> np.ndarray:
    try:
        ts = np.asarray(
            times.detach().cpu() if isinstance(times, Tensor) else times, dtype=np.float64
        ).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError("times must be a sequence of numbers in (0, 1]") from None
    if ts.size == 0 or not np.all(np.isfinite(ts)) or ts.min() <= 0.0 or ts.max() > 1.0:
        raise ValueError(f"times must be a non-empty sequence of numbers in (0, 1], got {times!r}")
    return ts


def _monte_carlo(
    p: Perturbation, q: GaussianMixture, t: float, process: Process, n: int, seed: int
) -> tuple[float, float, float, float]:
    """Means of |delta|^2 and ||grad delta||_F^2 over n exact samples of q, with the variances of
    those means (sample variance / n). Cost O(n K d^2) (closed-form Hessians), in chunks."""
    x = q.sample(n, seed=seed)
    k = q.weights.shape[-1]  # components (per factor of a product: not K^d)
    rows = max(1, _CHUNK // (k * q.dim * q.dim))
    a = torch.cat([p.delta(c, t, process).square().sum(-1) for c in x.split(rows)])
    b = torch.cat([p.jacobian(c, t, process).square().sum((-2, -1)) for c in x.split(rows)])
    return float(a.mean()), float(a.var()) / n, float(b.mean()), float(b.var()) / n


def _sqrt_ci(e2: float, half2: float) -> float:
    """Half-width for eps = sqrt(e2) from the half-width half2 of e2: the wider (lower) side of
    [sqrt(e2 - half2), sqrt(e2 + half2)], so no delta-method breakdown near 0."""
    return math.sqrt(max(e2, 0.0)) - math.sqrt(max(e2 - half2, 0.0))


def score_error(
    target: GaussianMixture,
    process: Process,
    perturbation: Perturbation | None,
    times: Sequence[float],
    *,
    n: int = 20000,
    seed: int = 0,
    monte_carlo: bool = False,
) -> ScoreError:
    """eps_score and eps_jacobi of ``perturbation`` over the grid ``times`` (module docstring).

    Closed form (bias, sin, sigma-power: O(m K d) for m times) unless ``monte_carlo`` forces the
    estimate; otherwise n exact samples of q_t per time (seeds derived from (seed, j)), the
    per-time sample variances combined as var(mean over times) = sum_j var_j / m^2, and the 95%
    half-width 1.96 sd of eps^2 carried to eps by _sqrt_ci. Monte Carlo costs O(m n K d^2): pass a
    subsampled grid for long ones.
    """
    ts = _check_times(times)
    _check_int("n", n, 2)
    _check_int("seed", seed, 0)
    m = ts.size
    s2, j2, vs, vj = (np.zeros(m) for _ in range(4))
    exact = True
    spec = "" if perturbation is None else perturbation.spec
    if perturbation is not None:
        _check_compatible(target, perturbation)
        for j, t in enumerate(ts):
            q = target.noised(process, float(t))
            closed = None if monte_carlo else perturbation.moments(q, float(t), process)
            if closed is not None:
                s2[j], j2[j] = closed
            else:
                exact = False
                sub = int(np.random.SeedSequence([seed, j]).generate_state(1)[0])
                s2[j], vs[j], j2[j], vj[j] = _monte_carlo(
                    perturbation, q, float(t), process, n, sub
                )
    e_s2, e_j2 = float(s2.mean()), float(j2.mean())
    h_s2, h_j2 = (_Z95 * math.sqrt(v.sum()) / m for v in (vs, vj))
    if perturbation is None:
        method = "exact score (delta = 0)"
    elif exact:
        method = "closed form (Gaussian moments per coordinate)"
    else:
        method = f"Monte Carlo, {n} exact samples of q_t per time, closed-form Hessians"
    return ScoreError(
        eps_score=math.sqrt(e_s2),
        eps_jacobi=math.sqrt(e_j2),
        eps_score_ci=0.0 if exact else _sqrt_ci(e_s2, h_s2),
        eps_jacobi_ci=0.0 if exact else _sqrt_ci(e_j2, h_j2),
        exact=exact,
        method=method,
        spec=spec,
        n_samples=0 if exact else n,
        times=ts,
        eps_score2_t=s2,
        eps_jacobi2_t=j2,
        eps_score2_t_ci=_Z95 * np.sqrt(vs),
        eps_jacobi2_t_ci=_Z95 * np.sqrt(vj),
    )


def score_error_on_schedule(
    target: GaussianMixture,
    process: Process,
    perturbation: Perturbation | None,
    sampler: str,
    steps: int,
    *,
    t_end: float | None = None,
    options: dict | None = None,
    seed: int = 0,
    max_times: int | None = None,
) -> tuple[ScoreError, str]:
    """``score_error`` over the step start times of ``sampler`` run with ``steps`` steps (at most
    ``max_times`` of them, evenly spaced, to bound Monte Carlo costs; default the
    perturbation's ``mc_times``, with its ``mc_samples`` per time), and a description of that
    grid."""
    from convergence.samplers import get_spec
    from convergence.samplers.base import check_t_end, prepare

    spec = get_spec(sampler)
    t_end = check_t_end(process, t_end)
    _, _, schedule = prepare(spec, process, steps, t_end, dict(options or {}))
    times = [t for t, _ in schedule]
    kind = type(perturbation) if perturbation is not None else Perturbation
    max_times = kind.mc_times if max_times is None else max_times
    if len(times) > max_times:
        times = [times[round(i * (len(times) - 1) / (max_times - 1))] for i in range(max_times)]
    err = score_error(target, process, perturbation, times, n=kind.mc_samples, seed=seed)
    return err, f"{len(times)} step start times of T = {steps}"
