"""Every tensor a sampler creates follows the device of its input (issue 7).

The samplers run on the ``meta`` device: its tensors have shapes but no storage, so a tensor made
on the CPU inside a sampler (a missing ``device=``) fails at the first operation that mixes it
with the state, and a value read back to the host fails too. The score asserts that it is called
with states on that device. Adaptive samplers decide their steps from values (ggf's
accept/reject, scipy's RK45 on the host): they cannot run without data and are checked with a
device-asserting score on the CPU instead.
"""

import pytest
import torch

from analytic.processes import make_process
from convergence.evaluators import noise_source
from convergence.samplers import REGISTRY
from convergence.samplers.base import run_sampler
from convergence.targets import parse_target

DATA_DEPENDENT = {"ggf", "ode-rk45"}


def _process_for(spec):
    return make_process("ve" if spec.name in ("als", "cas") else "vp")


def _asserting_score(device: str):
    def score(x, t):
        assert x.device.type == device, x.device
        if isinstance(t, torch.Tensor):
            assert t.device.type == device or t.ndim == 0, t.device
        return -x  # shape- and device-preserving, no data needed

    return score


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - DATA_DEPENDENT))
@pytest.mark.parametrize("noise", ["independent", "brownian"])
def test_samplers_run_on_the_device_of_their_input(name, noise):
    spec = REGISTRY[name]
    x = torch.empty(5, 3, dtype=torch.float64, device="meta")
    try:
        out = run_sampler(
            spec, _asserting_score("meta"), _process_for(spec), x, 3, noise=noise_source(noise, 0)
        )
    except ValueError as exc:  # samplers that refuse Brownian paths (tested in their own files)
        if noise == "brownian" and "rownian" in str(exc):
            pytest.skip(f"{name} refuses Brownian noise")
        raise
    assert out.x.device.type == "meta" and out.x.shape == (5, 3) and out.x.dtype == torch.float64
    assert out.nfe > 0


@pytest.mark.parametrize("name", sorted(DATA_DEPENDENT))
def test_adaptive_samplers_call_the_score_on_the_input_device(name):
    spec = REGISTRY[name]
    target = parse_target("gmm:d=2,k=2,seed=0")
    process = make_process("vp")
    exact = target.score_fn(process)
    calls = []

    def score(x, t):
        calls.append(x.device)
        assert x.device == torch.device("cpu") and x.dtype == torch.float64
        return exact(x, t)

    x = target.noised(process, 1.0).sample(4, seed=0)
    out = run_sampler(spec, score, process, x, 1, noise=noise_source("independent", 0))
    assert out.x.device == x.device and out.x.dtype == x.dtype and len(calls) == out.nfe


def test_float32_states_stay_float32():
    """dtype follows the input too: a float32 state is never promoted inside the chain."""
    spec = REGISTRY["ddim"]
    x = torch.empty(4, 2, dtype=torch.float32, device="meta")
    out = run_sampler(
        spec,
        _asserting_score("meta"),
        make_process("vp"),
        x,
        4,
        noise=noise_source("independent", 0),
    )
    assert out.x.dtype == torch.float32
