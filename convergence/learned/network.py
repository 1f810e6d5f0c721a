"""A time-conditioned score network: a residual MLP with Fourier features of log sigma(t).

For x of shape (n, d) and a time t (a float, a 0-dim tensor or per-sample times (n,)), with
alpha = alpha(t), sigma = sigma(t) of the forward process (x_t = alpha x_0 + sigma xi), the
network computes

    c      = log sigma(t)                                       (a smooth time coordinate)
    phi(c) = [c, sin(2 pi f_j c), cos(2 pi f_j c)]_{j=1..F},    f_j ~ N(0, 1) fixed at init
    e      = SiLU(W_e2 SiLU(W_e1 phi(c)))                       (time embedding, width w)
    h_0    = W_in (x / sqrt(alpha^2 s_data^2 + sigma^2))        (input projection)
    h_b    = h_{b-1} + W_b2 SiLU(W_b1 (LN(h_{b-1}) (1 + a_b) + b_b)),  (a_b, b_b) = A_b e
    F(x,t) = W_out SiLU(LN(h_B))                                (n, d)

Random Fourier features of a scalar input follow Tancik et al. (2020, "Fourier features let
networks learn high frequency functions") and their use for the noise level in score networks
Song et al. (2021, "Score-based generative modeling through SDEs", Gaussian Fourier projection);
log sigma as the conditioning coordinate and the input scale c_in = 1/sqrt(alpha^2 s_data^2 +
sigma^2), which keeps Var[c_in x_t] ~ 1 when Var[x_0] ~ s_data^2 (so VE's sigma up to 50 does not
blow up the inputs), follow Karras et al. (2022, EDM, Table 1, c_in and c_noise); the time
injection by a per-block scale and shift of the normalised features is FiLM (Perez et al. 2018),
as in DiT's adaLN (Peebles & Xie 2023).

The output F is a unit-scale target, turned into a score by ``score``:

* predict="eps":   F ~ E[xi | x_t],                score = -F / sigma;
* predict="score": F ~ c_s grad log q_t(x_t),      score =  F / c_s,
  c_s = sqrt(alpha^2 s_data^2 + sigma^2) = 1 / c_in,

both from grad log q_t(x_t) = -E[xi | x_t] / sigma (Tweedie; Vincent 2011). The score of q_t has
size ~ 1 / c_s at every t (it tends to the data score at small t and to -x / c_s^2 at large t), so
F is O(1) and smooth in t for predict="score"; for predict="eps", F = -sigma score vanishes like
sigma as t -> 0, and a fixed absolute error of F becomes a score error ~ 1 / sigma (this output
scaling plays the role of EDM's c_out, Karras et al. 2022, section 5). The parameters are
float32; a forward pass costs O(n (d w + B w^2)) flops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from analytic.processes import PROCESSES, Time, make_process
from convergence.learned.device import resolve_device

Tensor = torch.Tensor
PREDICTS = ("eps", "score")


def _positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes and parameterisation of a ``ScoreNetwork``.

    dim: data dimension d; process: "vp" or "ve" (its default parameters, make_process);
    width: hidden width w; blocks: number B of residual blocks (0 allowed); fourier: number F of
    Fourier frequencies; predict: "eps" (noise) or "score" (c_s times the score);
    s_data: data standard deviation used in c_in (``train`` sets it from the target's samples).
    """

    dim: int
    process: str
    width: int = 256
    blocks: int = 2
    fourier: int = 16
    predict: str = "score"
    s_data: float = 1.0

    def __post_init__(self) -> None:
        _positive_int("dim", self.dim)
        if self.process not in PROCESSES:
            raise ValueError(f"unknown process {self.process!r}; allowed: {', '.join(PROCESSES)}")
        _positive_int("width", self.width)
        _positive_int("blocks", self.blocks, minimum=0)
        _positive_int("fourier", self.fourier)
        if self.predict not in PREDICTS:
            raise ValueError(f"unknown predict {self.predict!r}; allowed: {', '.join(PREDICTS)}")
        s = self.s_data
        if isinstance(s, bool) or not isinstance(s, int | float) or not (0 < s < math.inf):
            raise ValueError(f"s_data must be a finite number > 0, got {s!r}")


class _Block(nn.Module):
    """h -> h + W2 SiLU(W1 (LN(h) (1 + a) + b)) with (a, b) = A e (FiLM of the time embedding)."""

    def __init__(self, width: int, **factory) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, **factory)
        self.film = nn.Linear(width, 2 * width, **factory)
        self.fc1 = nn.Linear(width, width, **factory)
        self.fc2 = nn.Linear(width, width, **factory)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        scale, shift = self.film(e).chunk(2, dim=-1)
        z = self.norm(h) * (1.0 + scale) + shift
        return h + self.fc2(F.silu(self.fc1(z)))


class ScoreNetwork(nn.Module):
    """The residual MLP of the module docstring, float32, on ``device``.

    ``seed`` fixes the initialisation through a private CPU torch.Generator (no global RNG; the
    same seed gives the same weights on every device): linear weights U(-1/sqrt(fan_in),
    1/sqrt(fan_in)), biases 0, the output layer 0 (so the initial score is 0), f_j ~ N(0, 1).
    ``seed=None`` leaves the parameters uninitialised (for ``load_state_dict``).
    """

    def __init__(
        self,
        config: NetworkConfig,
        *,
        seed: int | None = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        if not isinstance(config, NetworkConfig):
            raise ValueError(f"config must be a NetworkConfig, got {type(config).__name__}")
        self.config = config
        self.process = make_process(config.process)
        w, f = config.width, config.fourier
        factory = {"device": torch.device("meta"), "dtype": torch.float32}
        self.register_buffer("frequencies", torch.empty(f, **factory))
        self.embed1 = nn.Linear(2 * f + 1, w, **factory)
        self.embed2 = nn.Linear(w, w, **factory)
        self.input = nn.Linear(config.dim, w, **factory)
        self.blocks = nn.ModuleList(_Block(w, **factory) for _ in range(config.blocks))
        self.norm = nn.LayerNorm(w, **factory)
        self.output = nn.Linear(w, config.dim, **factory)
        self.to_empty(device=resolve_device(device))
        if seed is not None:
            self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """Initialise every parameter and buffer from ``seed`` (see the class docstring)."""
        gen = torch.Generator().manual_seed(int(seed))

        def fill(tensor: Tensor, values: Tensor) -> None:
            tensor.copy_(values.to(tensor.dtype))

        fill(self.frequencies, torch.randn(self.frequencies.shape, generator=gen))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                fill(
                    module.weight,
                    torch.empty(module.weight.shape).uniform_(-bound, bound, generator=gen),
                )
                module.bias.zero_()
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                module.weight.fill_(1.0)
                module.bias.zero_()
        self.output.weight.zero_()

    @property
    def device(self) -> torch.device:
        return self.frequencies.device

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def coefficients(self, t: Time, n: int) -> tuple[Tensor | float, Tensor | float]:
        """alpha(t), sigma(t) as floats (t a float) or (n or 1, 1) float32 tensors on the
        network's device (t a tensor of shape () or (n,))."""
        if isinstance(t, Tensor):
            if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, n)):
                raise ValueError(
                    f"t must be a float, a 0-dim or an ({n},) tensor, got {tuple(t.shape)}"
                )
            t = t.to(device=self.device, dtype=torch.float32).reshape(-1, 1)
            return self.process.alpha(t), self.process.sigma(t)
        t = float(t)
        return self.process.alpha(t), self.process.sigma(t)

    def forward(self, x: Tensor, t: Time) -> Tensor:
        """The unit-scale output F(x, t) of shape (n, d) in float32 (module docstring)."""
        return self._output(x, t)[0]

    def score(self, x: Tensor, t: Time) -> Tensor:
        """s_theta(x, t) = -F / sigma(t) (predict="eps") or F / c_s(t) (predict="score"),
        shape (n, d), in x's dtype on the network's device."""
        out, divisor = self._output(x, t)
        return (out / divisor).to(x.dtype)

    def _output(self, x: Tensor, t: Time) -> tuple[Tensor, Tensor | float]:
        """F(x, t) and the divisor -sigma (eps) or c_s (score) with score = F / divisor (a float
        or an (n or 1, 1) tensor)."""
        if x.ndim != 2 or x.shape[1] != self.config.dim:
            raise ValueError(f"x must have shape (n, {self.config.dim}), got {tuple(x.shape)}")
        if x.device != self.device:
            raise ValueError(f"x is on {x.device} but the network is on {self.device}")
        x = x.to(torch.float32)
        n = x.shape[0]
        alpha, sigma = self.coefficients(t, n)
        s = self.config.s_data
        # c has one row per distinct time: (1, 1) for one time, so the time embedding and the
        # blocks' FiLM terms (about half the flops at B = 2) are computed once and broadcast
        if isinstance(sigma, Tensor):
            c = torch.log(sigma)
            c_in = torch.rsqrt(alpha**2 * s**2 + sigma**2)
        else:
            c = torch.full((1, 1), math.log(sigma), device=self.device)
            c_in = 1.0 / math.sqrt(alpha**2 * s**2 + sigma**2)
        arg = (2.0 * math.pi) * c * self.frequencies
        e = F.silu(self.embed2(F.silu(self.embed1(torch.cat([c, arg.sin(), arg.cos()], dim=1)))))
        h = self.input(x * c_in)
        for block in self.blocks:
            h = block(h, e)
        divisor = -sigma if self.config.predict == "eps" else 1.0 / c_in
        return self.output(F.silu(self.norm(h))), divisor
