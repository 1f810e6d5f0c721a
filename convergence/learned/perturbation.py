"""A trained network as a score source, measured against the exact score of its target.

The spec ``learned:CKPT`` (or ``learned:path=CKPT,device=D``) is a score perturbation
(``convergence.scores``), so a network goes wherever a perturbed score goes: ``perturbed_score``
and ``convergence.sample``, ``convergence rate --score learned:CKPT``, the ``perturbations`` of
sweep configs, ``score_error``. Its error field is

    delta(x, t) = s_theta(x, t) - grad log q_t(x),

with q_t the exact noised marginal of the mixture the network was trained on (THEORY.md 3.1), so
eps_score(t)^2 = E_{q_t} |delta|^2 and eps_jacobi(t)^2 = E_{q_t} ||grad delta||_F^2 are Monte Carlo
means over exact samples of q_t (``convergence.scores.score_error``, with a 95% CI); the Jacobian
of the network comes from autograd (torch.func.jacrev), the exact one in closed form.

The network runs on its own device (``convergence.learned.device``, "auto": CUDA when present).
Its score takes x on that device and returns a tensor on it in x's dtype (the float32 network
sees x cast to float32): no host-device copy happens inside a sampling loop. A state x on another
device is refused with one line, since a silent copy per score call is what this avoids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from analytic.gmm import GaussianMixture
from analytic.processes import Process, Time
from convergence.scores import Perturbation, Score, group_by_time, same_mixture

Tensor = torch.Tensor


@dataclass(frozen=True)
class LearnedScore(Perturbation):
    """A checkpoint of ``convergence train`` as a score, with delta = s_theta - grad log q_t.

    Fields: ``target`` (the mixture to measure against: it must be the one the network was
    trained on), ``path`` (the checkpoint; its JSON sidecar beside it), ``device`` ("auto",
    "cpu", "cuda[:N]"). Loading verifies the checkpoint (``load_checkpoint``).
    """

    target: GaussianMixture = field(compare=False, repr=False)
    path: str = ""
    device: str = "auto"
    model: Any = field(init=False, compare=False, repr=False)
    meta: dict = field(init=False, compare=False, repr=False)

    kind = "learned"
    keys = {"path": str, "device": str}
    required = ("path",)
    # Monte Carlo budget of score_error_on_schedule, per sweep task: every sample costs a network
    # Jacobian (about 0.25 ms at d = 16 on one core). 1000 draws at 8 of the grid's times give
    # eps_score to about 2% (its 95% CI is stored); score_error_curve gives the full eps_score(t).
    mc_samples = 1000
    mc_times = 8

    def __post_init__(self) -> None:
        from convergence.learned.checkpoint import load_checkpoint
        from convergence.targets import parse_target

        if not self.path:
            raise ValueError("a learned score needs the checkpoint path: learned:CKPT")
        model, meta = load_checkpoint(self.path, device=self.device)
        trained_on = meta["train"]["target"]
        if not same_mixture(parse_target(trained_on), self.target):
            raise ValueError(
                f"checkpoint {self.path} was trained on {trained_on!r}, not on this target: "
                "measure it against the target it was trained on"
            )
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "meta", meta)

    @classmethod
    def for_target(cls, target: GaussianMixture, **params) -> LearnedScore:
        return cls(target, **params)

    @property
    def spec(self) -> str:
        if self.device == "auto" and "," not in self.path:
            return f"learned:{self.path}"
        return f"learned:path={self.path},device={self.device}"

    @property
    def dim(self) -> int:
        return self.target.dim

    @property
    def separable(self) -> bool:
        return self.target.dim == 1  # a network mixes coordinates

    def _coordinate(self, i: int) -> Perturbation:
        return self

    @property
    def process_name(self) -> str:
        """The process ("vp" or "ve") the network was trained for."""
        return self.meta["train"]["process"]

    @property
    def on(self) -> torch.device:
        """The device the network lives on (where sampling states must be)."""
        return self.model.device

    def _check_process(self, process: Process) -> None:
        if process.name != self.process_name:
            raise ValueError(
                f"checkpoint {Path(self.path).name} was trained for the {self.process_name} "
                f"process, not {process.name}"
            )

    def network_score(self, x: Tensor, t: Time) -> Tensor:
        """s_theta(x, t) on the network's device in x's dtype (t: a float, 0-dim or (n,));
        x on another device is refused (``ScoreNetwork.score``)."""
        return self.model.score(x, t)

    def replacement_score(self, process: Process) -> Score:
        self._check_process(process)
        return self.network_score

    def delta(self, x: Tensor, t: Time, process: Process) -> Tensor:
        self._check_process(process)
        return self.network_score(x, t) - self.target.score_fn(process)(x, t)

    def jacobian(self, x: Tensor, t: Time, process: Process) -> Tensor:
        """grad_x s_theta (autograd, per sample) minus the exact Hessian of log q_t."""
        self._check_process(process)
        return group_by_time(self._jacobian_at, x, t, process)

    def _jacobian_at(self, x: Tensor, t: float, process: Process) -> Tensor:
        """Rows of x pass through the network independently (no batch statistics), so
        d/dx_r of sum_rows s_theta,i is row r's gradient of output i: one reverse pass per
        output coordinate for the whole batch (torch.func.jacrev), (n, d, d)."""
        from torch.func import jacrev

        def summed(z: Tensor) -> Tensor:
            return self.network_score(z, t).sum(0)

        with torch.enable_grad():
            net = jacrev(summed)(x).permute(1, 0, 2)  # [i, r, j] -> [r, i, j]
        return net.detach() - self.target.noised(process, t).hessian(x)
