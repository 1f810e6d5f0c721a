"""Denoising score matching of a ``ScoreNetwork`` on samples of a mixture target.

One step draws a batch of n triples (t, x_0, xi) with x_0 ~ target, xi ~ N(0, I), forms
x_t = alpha(t) x_0 + sigma(t) xi and minimises (Vincent 2011; Song et al. 2021, eq. 7)

    J = (1 / (n d)) sum_i lambda(t_i) |s_theta(x_t,i, t_i) - grad log q(x_t,i | x_0,i)|^2,
    grad log q(x_t | x_0) = -xi / sigma(t),

that is J = (1 / (n d)) sum_i w(t_i) |G_i + xi_i|^2 with G = sigma s_theta (= -F for
predict="eps") and w = lambda / sigma^2. Its minimiser over functions is the score of q_t at every
t. The weightings:

* "sigma2": lambda = sigma^2, w = 1, J = |F - xi|^2 / d for predict="eps" (the loss of Ho et al.
  2020). This is the proper weighting over t in the sense of Song et al. (2021, section 3.3):
  lambda ~ 1 / E|grad log q(x_t | x_0)|^2, the regression target -xi / sigma has size
  sqrt(d) / sigma, so unweighted the loss at sigma = 0.01 would be 1e4 times the loss at
  sigma = 1 and its gradient noise would swamp every other time; with lambda = sigma^2 every t's
  loss is O(1) per coordinate.
* "relative": lambda = c_s^2 = alpha^2 s_data^2 + sigma^2 (the squared scale of the score,
  ``network``), so the relative score error |s_theta - s|^2 / |s|^2 weighs the same at every t;
  its per-sample noise grows like c_s^2 / sigma^2 at small t unless the noise is antithetic.

What is differentiated (and recorded as the loss) is J minus its parameter-free part
(1 / (n d)) sum_i w_i |xi_i|^2, i.e. (1 / (n d)) sum_i w_i (|G_i|^2 + 2 xi_i . G_i): the same
gradient without the large constant (so "sigma2" losses are the usual ones minus 1, and can be
negative). Antithetic noise (``antithetic``, default) draws pairs (x_0, t, xi), (x_0, t, -xi):
the odd-in-xi part of the gradient, O(1) while the signal is O(sigma^2 / c_s^2) at small t,
cancels within a pair, leaving an implicit-score-matching gradient (Hyvarinen 2005) with a
Gaussian Hutchinson probe.

Times: t ~ U[t_min, 1] ("uniform") or lambda = log(alpha / sigma) ~ U[lambda(1), lambda(t_min)]
("log-snr"), both drawn with the low-discrepancy stratification u_i = (i + u) / n, u ~ U[0, 1)
of Kingma et al. (2021, "Variational diffusion models", appendix I.1). Sampling in log-SNR is
importance sampling of t with density proportional to |d lambda / dt|: it spends the batch on the
informative small and medium noise levels instead of the near-prior end where the score is
~ -x / sigma^2; it changes the weighting over t of the objective accordingly (Kingma & Gao 2023,
"Understanding diffusion objectives").

Optimiser: Adam (Kingma & Ba 2015) with the learning rate decayed by a half cosine from ``lr`` to
``lr * lr_decay`` over ``steps``; optionally an exponential moving average of the weights with
decay min(ema, (1 + k) / (10 + k)) at step k, which is the returned network.

Determinism and resuming: every random draw of step k comes from its own torch.Generator seeded
from (seed, k) (numpy SeedSequence), and the initial weights from the seed, so a run is a pure
function of the config on the CPU, and a run stopped at step k and resumed from its checkpoint
(weights, moving average, Adam state) gives bitwise the weights of the uninterrupted run.
Cost per step: O(batch (d w + B w^2)) flops forward and twice that backward.

Defaults (predict="score", width 256, 2 blocks, log-SNR times, sigma2 weighting, antithetic noise,
EMA 0.999, lr 1e-3 decayed to 1e-5) are the best of a small search on product:d=16,k=3,seed=0
(VP, one CPU thread, 3000 steps each): predict="eps" left a relative score error of 3 to 30 at
t = 1e-3 against 0.2 for "score"; the "relative" weighting and uniform times did not lower the
error averaged over ddim's grid; width and EMA helped a little. Below t ~ 0.1 the error (~0.15
relative) comes from the noisy DSM targets, not from the network's capacity: regressing the same
network on the exact score (weighted by c_s^2, 2000 steps) reaches 4e-3 there.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from analytic.processes import PROCESSES, make_process
from convergence.learned.checkpoint import (
    load_weights,
    network_config_of,
    read_checkpoint,
    save_checkpoint,
)
from convergence.learned.device import resolve_device
from convergence.learned.network import NetworkConfig, ScoreNetwork
from convergence.targets import parse_target

WEIGHTINGS = ("sigma2", "relative")
TIME_SAMPLINGS = ("uniform", "log-snr")
_FLUSH = 25  # losses are read back from the device every _FLUSH steps (one sync, not one per step)
_S_DATA_SAMPLES = 16384


@dataclass(frozen=True)
class TrainConfig:
    """What to train on and how (see the module docstring for the loss and the schedule).

    target: a target spec (``convergence.targets.parse_target``); process: "vp" or "ve";
    steps: total optimiser steps; batch: samples per step; lr: initial Adam learning rate, decayed
    by a half cosine to lr * lr_decay; seed: seeds the initial weights and every draw; t_min:
    smallest training time (None: the process's default end time ``t_end_default``); weighting:
    lambda(t) ("sigma2" or "relative"); time_sampling: "uniform" in t or "log-snr"; ema: decay of
    the weights' moving average (0: none); antithetic: draw the noise in pairs (xi, -xi).
    """

    target: str
    process: str
    steps: int
    batch: int = 512
    lr: float = 1e-3
    lr_decay: float = 0.01
    seed: int = 0
    t_min: float | None = None
    weighting: str = "sigma2"
    time_sampling: str = "log-snr"
    ema: float = 0.999
    antithetic: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.target, str):
            raise ValueError(f"target must be a spec string, got {self.target!r}")
        parse_target(self.target)  # validates the spec
        if self.process not in PROCESSES:
            raise ValueError(f"unknown process {self.process!r}; allowed: {', '.join(PROCESSES)}")
        for name in ("steps", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not (isinstance(self.lr, int | float) and 0 < self.lr < math.inf):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.lr_decay, int | float) and 0 < self.lr_decay <= 1):
            raise ValueError(f"lr_decay must lie in (0, 1], got {self.lr_decay!r}")
        if not (isinstance(self.ema, int | float) and 0 <= self.ema < 1):
            raise ValueError(f"ema must lie in [0, 1), got {self.ema!r}")
        if not isinstance(self.antithetic, bool):
            raise ValueError(f"antithetic must be true or false, got {self.antithetic!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(
                f"unknown weighting {self.weighting!r}; allowed: {', '.join(WEIGHTINGS)}"
            )
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(
                f"unknown time_sampling {self.time_sampling!r}; allowed: "
                f"{', '.join(TIME_SAMPLINGS)}"
            )
        if self.t_min is None:
            object.__setattr__(self, "t_min", make_process(self.process).t_end_default)
        if not (isinstance(self.t_min, int | float) and 0 < self.t_min < 1):
            raise ValueError(f"t_min must lie in (0, 1), got {self.t_min!r}")
        object.__setattr__(self, "t_min", float(self.t_min))

    def learning_rate(self, step: int) -> float:
        """lr_k = lr (r + (1 - r) (1 + cos(pi k / steps)) / 2), r = lr_decay, for step k."""
        r = self.lr_decay
        return self.lr * (r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * step / self.steps)))


def _seed(*keys: int) -> int:
    """A 63-bit seed mixed from non-negative integer keys (numpy SeedSequence)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _sample_target(target, n: int, seed: int) -> torch.Tensor:
    """n draws of the target in float64 on the CPU; a full-covariance mixture is drawn in chunks
    of at most 2^22 / d^2 rows (its sampler materialises one d x d basis per row)."""
    if getattr(target, "kind", None) != "full":
        return target.sample(n, seed=seed)
    chunk = max(1, (1 << 22) // target.dim**2)
    parts = [
        target.sample(min(chunk, n - i), seed=_seed(seed, j))
        for j, i in enumerate(range(0, n, chunk))
    ]
    return torch.cat(parts)


def data_std(target, seed: int) -> float:
    """s_data = sqrt(mean_i Var[x_0,i]) estimated from n = clip(2^20 / d, 1024, 16384) target
    samples (seeded): n d >= 2^20 numbers, a relative error of order 1e-3."""
    n = min(_S_DATA_SAMPLES, max(1024, (1 << 20) // target.dim))
    x = _sample_target(target, n, _seed(seed, 1))
    return float(x.var(dim=0).mean().sqrt())


def dsm_weight(weighting: str, alpha, sigma, s_data: float):
    """The factor w(t) = lambda(t) / sigma(t)^2 of the loss w |sigma s_theta + xi|^2:
    1 for "sigma2", c_s^2 / sigma^2 = (alpha^2 s_data^2 + sigma^2) / sigma^2 for "relative"."""
    if weighting == "sigma2":
        return torch.ones_like(sigma)
    return (alpha**2 * s_data**2 + sigma**2) / sigma**2


def dsm_loss(model: ScoreNetwork, weighting: str, t, x0, xi) -> torch.Tensor:
    """(1 / (n d)) sum_i w_i (|G_i|^2 + 2 xi_i . G_i), G = sigma(t) s_theta(x_t, t), the weighted
    DSM loss minus its parameter-free part (module docstring), for t (n,), x0, xi (n, d) on the
    CPU (float64); computed in float32 on the network's device."""
    process, dev = model.process, model.device
    alpha, sigma = process.alpha(t)[:, None], process.sigma(t)[:, None]
    w = dsm_weight(weighting, alpha, sigma, model.config.s_data)
    x_t = (alpha * x0 + sigma * xi).to(device=dev, dtype=torch.float32)
    sigma, xi, w = (v.to(device=dev, dtype=torch.float32) for v in (sigma, xi, w))
    G = sigma * model.score(x_t, t.to(device=dev, dtype=torch.float32))  # -F for predict="eps"
    return (w * (G.square() + 2.0 * xi * G)).mean()


def draw_batch(config: TrainConfig, target, process, step: int) -> tuple[torch.Tensor, ...]:
    """(t (n,), x_0 (n, d), xi (n, d)) of training step ``step``, float64 on the CPU, a pure
    function of (config.seed, step)."""
    n = config.batch
    m = (n + 1) // 2 if config.antithetic else n
    x0 = _sample_target(target, m, _seed(config.seed, 0, step, 0))
    gen = torch.Generator().manual_seed(_seed(config.seed, 0, step, 1))
    xi = torch.randn(m, target.dim, generator=gen, dtype=torch.float64)
    u = torch.arange(m, dtype=torch.float64) + torch.rand(1, generator=gen, dtype=torch.float64)
    u = u[torch.randperm(m, generator=gen)] / m
    if config.time_sampling == "uniform":
        t = config.t_min + (1.0 - config.t_min) * u
    else:
        lam_lo, lam_hi = process.lam(1.0), process.lam(config.t_min)
        t = process.t_of_lam(lam_hi + (lam_lo - lam_hi) * u).clamp(config.t_min, 1.0)
    if config.antithetic:  # pairs (x_0, t, xi), (x_0, t, -xi)
        t, x0, xi = torch.cat([t, t])[:n], torch.cat([x0, x0])[:n], torch.cat([xi, -xi])[:n]
    return t, x0, xi


class LossBar:
    """A one-line progress bar with the smoothed loss on ``stream``: rewritten in place on a
    terminal, one line per 10% otherwise."""

    def __init__(self, total: int, start: int = 0, stream=None, width: int = 30) -> None:
        self.total, self.start, self.width = total, start, width
        self.stream = sys.stderr if stream is None else stream
        self.clock = time.perf_counter()
        self._tenth = (10 * start) // max(total, 1)

    def __call__(self, step: int, loss: float) -> None:
        tty = getattr(self.stream, "isatty", lambda: False)()
        tenth = (10 * step) // max(self.total, 1)
        if not (tty or tenth != self._tenth or step == self.total):
            return
        self._tenth = tenth
        filled = round(self.width * step / max(self.total, 1))
        elapsed = time.perf_counter() - self.clock
        rate = (step - self.start) / elapsed if elapsed > 0 else math.nan
        eta = (self.total - step) / rate if rate > 0 else math.nan
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {step}/{self.total}  loss {loss:.4e}  "
            f"{rate:.1f} steps/s  elapsed {_clock(elapsed)}  ETA {_clock(eta)}"
        )
        end = "\n" if (not tty or step == self.total) else ""
        print(("\r" if tty else "") + line, end=end, file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


def _check_resume(config: TrainConfig, network_config, meta: dict, path) -> NetworkConfig:
    stored_net = network_config_of(meta, path)
    if network_config is not None and replace(network_config, s_data=stored_net.s_data) != (
        stored_net
    ):
        raise ValueError(f"--resume {path}: its network {stored_net} differs from the one asked")
    stored = meta["train"]
    for f in fields(TrainConfig):
        if f.name != "steps" and stored.get(f.name) != getattr(config, f.name):
            raise ValueError(
                f"--resume {path}: it was trained with {f.name}={stored.get(f.name)!r}, not "
                f"{getattr(config, f.name)!r}; resume with the same settings"
            )
    if meta["step"] >= config.steps:
        raise ValueError(
            f"--resume {path} is at step {meta['step']} already; give steps > {meta['step']}"
        )
    return stored_net


def train(
    config: TrainConfig,
    network_config: NetworkConfig | None = None,
    *,
    device: str | torch.device = "auto",
    resume: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    stop_at: int | None = None,
    progress: bool | Callable[[int, float], None] = False,
) -> tuple[ScoreNetwork, list[tuple[int, float]]]:
    """Train a score network by denoising score matching (module docstring); returns the network
    (the moving average when ``config.ema`` > 0; eval mode, on the resolved device) and the
    history [(step, loss)] of every step (loss of the batch before that step's update).

    network_config: sizes and parameterisation (default ``NetworkConfig(d, process)``); its
    s_data is always set to the target's data standard deviation (``data_std``).
    resume: a checkpoint of an earlier run of the same config (any ``steps``): training continues
    from its step with its weights and Adam state up to ``config.steps``; changing ``steps``
    changes the cosine schedule from the stored step on. checkpoint: write a checkpoint there at
    the end and every ``checkpoint_every`` steps (0: only at the end), so an interrupted run
    resumes from the last one.
    stop_at: stop after this many steps (the schedule still spans ``config.steps``), e.g. to
    train in chunks. progress: True draws a ``LossBar`` on stderr; a callable receives
    (step, smoothed loss) every few steps.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    end = config.steps if stop_at is None else stop_at
    if isinstance(end, bool) or not isinstance(end, int) or not 1 <= end <= config.steps:
        raise ValueError(f"stop_at must be an integer in [1, steps={config.steps}], got {stop_at}")
    if not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be an integer >= 0, got {checkpoint_every!r}")
    dev = resolve_device(device)
    target = parse_target(config.target)
    process = make_process(config.process)

    if resume is not None:
        state, meta = read_checkpoint(resume, dev)
        net_config = _check_resume(config, network_config, meta, resume)
        start = int(meta["step"])
        history = [(int(s), float(v)) for s, v in state["history"].tolist()]
        if state["optimizer"] is None:
            raise ValueError(f"--resume {resume} holds no optimizer state; it cannot be resumed")
    else:
        net_config = replace(
            network_config or NetworkConfig(target.dim, config.process),
            s_data=data_std(target, config.seed),
        )
        start, history, state = 0, [], None
    if net_config.dim != target.dim or net_config.process != config.process:
        raise ValueError(
            f"network for d={net_config.dim}, {net_config.process} cannot train on "
            f"{config.target} (d={target.dim}) with the {config.process} process"
        )
    if end <= start:
        raise ValueError(f"stop_at={end} is not after the resumed step {start}")

    model = ScoreNetwork(net_config, seed=config.seed, device=dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema > 0 else None
    if state is not None:
        load_weights(model, state["raw"] if ema is not None else state["model"], resume)
        if ema is not None:
            load_weights(ema, state["model"], resume)
        optimizer.load_state_dict(state["optimizer"])

    bar = LossBar(end, start) if progress is True else (progress or None)
    smoothed, pending = math.nan, []
    wall = time.perf_counter()

    def save(step: int) -> None:
        save_checkpoint(
            checkpoint,
            ema if ema is not None else model,
            net_config,
            config,
            optimizer=optimizer,
            step=step,
            history=history,
            raw=model if ema is not None else None,
            extra={"device": str(dev), "train_seconds": round(time.perf_counter() - wall, 3)},
        )

    def flush(step: int) -> None:
        nonlocal smoothed, pending
        if not pending:
            return
        values = torch.stack(pending).tolist()
        first = step - len(values) + 1
        history.extend((first + i, v) for i, v in enumerate(values))
        for v in values:  # exponential smoothing of the displayed loss
            smoothed = v if math.isnan(smoothed) else 0.98 * smoothed + 0.02 * v
        pending = []
        if bar is not None:
            bar(step, smoothed)

    model.train()
    for step in range(start + 1, end + 1):
        t, x0, xi = draw_batch(config, target, process, step - 1)
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate(step - 1)
        loss = dsm_loss(model, config.weighting, t, x0, xi)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            decay = min(config.ema, step / (step + 9.0))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1.0 - decay)
        pending.append(loss.detach())
        if step % _FLUSH == 0 or step == end:
            flush(step)
            if not math.isfinite(smoothed):
                raise ValueError(f"training diverged at step {step} (loss {smoothed}); lower lr")
        if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
            save(step)
    if checkpoint is not None:
        save(end)
    optimizer.zero_grad(set_to_none=True)
    result = ema if ema is not None else model
    result.eval()
    return result, history
