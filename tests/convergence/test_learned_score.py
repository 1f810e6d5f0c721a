"""A trained network as a score source (convergence.learned.perturbation; issue 7).

One tiny network (d = 2, a few hundred steps, seconds) is trained per module; the tests check
that it goes wherever a score goes, that its error field and Jacobian are the network's minus the
exact ones, that eps_score(t) is the Monte Carlo mean with a CI, and that bad input fails with
one line.
"""

import math

import pytest
import torch

from analytic.processes import make_process
from convergence.claims.learned import plot_score_error, score_error_curve
from convergence.cli import main
from convergence.evaluators import error
from convergence.learned.checkpoint import save_checkpoint
from convergence.learned.perturbation import LearnedScore
from convergence.learned.training import TrainConfig, train
from convergence.scores import parse_perturbation, perturbed_score, score_error
from convergence.targets import parse_target

SPEC = "gmm:d=2,k=2,seed=0"
VP = make_process("vp")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from convergence.learned.network import NetworkConfig

    path = tmp_path_factory.mktemp("net") / "tiny.pt"
    config = TrainConfig(target=SPEC, process="vp", steps=300, batch=256, lr=3e-3)
    train(config, NetworkConfig(dim=2, process="vp", width=32, blocks=1), checkpoint=path)
    return path


@pytest.fixture(scope="module")
def learned(checkpoint):
    return parse_perturbation(f"learned:{checkpoint}", parse_target(SPEC))


def test_spec_parses_to_the_network_and_round_trips(learned, checkpoint):
    assert isinstance(learned, LearnedScore) and learned.kind == "learned"
    assert learned.spec == f"learned:{checkpoint}" and not learned.separable
    again = parse_perturbation(f"learned:path={checkpoint},device=cpu", parse_target(SPEC))
    assert again.spec == f"learned:path={checkpoint},device=cpu"
    assert learned.on == torch.device("cpu") and learned.process_name == "vp"


def test_perturbed_score_is_the_network_and_delta_is_its_error(learned):
    target = parse_target(SPEC)
    x = target.noised(VP, 0.3).sample(64, seed=1)
    s = perturbed_score(target, VP, learned)(x, 0.3)
    assert s.dtype == torch.float64 and s.shape == x.shape
    assert torch.equal(s, learned.model.score(x, 0.3))
    delta = learned.delta(x, 0.3, VP)
    assert torch.allclose(delta, s - target.score_fn(VP)(x, 0.3), atol=0, rtol=0)
    t = torch.full((64,), 0.3, dtype=torch.float64)  # per-sample times give the same field
    assert torch.allclose(learned.delta(x, t, VP), delta, atol=1e-6)


def test_jacobian_matches_central_differences(learned):
    target = parse_target(SPEC)
    x = target.noised(VP, 0.5).sample(5, seed=2)
    jac = learned.jacobian(x, 0.5, VP)
    h = 1e-3  # the network is float32: differences of its outputs have ~1e-7 relative noise
    for j in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[j] = h
        fd = (learned.delta(x + e, 0.5, VP) - learned.delta(x - e, 0.5, VP)) / (2 * h)
        assert torch.allclose(jac[:, :, j], fd, atol=2e-3, rtol=2e-3)


def test_eps_score_is_the_monte_carlo_mean_with_a_ci(learned):
    target = parse_target(SPEC)
    err = score_error(target, VP, learned, [0.2, 0.8], n=400, seed=0)
    assert not err.exact and err.n_samples == 400 and "Monte Carlo" in err.method
    assert err.eps_score > 0 and 0 < err.eps_score_ci < err.eps_score
    assert err.eps_score == pytest.approx(math.sqrt(err.eps_score2_t.mean()), rel=1e-12)
    assert (err.eps_score2_t_ci > 0).all() and (err.eps_jacobi2_t > 0).all()
    curve = score_error_curve(learned, VP, [0.2, 0.8], n=400, seed=0)
    assert curve["eps2"] == pytest.approx(err.eps_score2_t.tolist(), rel=1e-12)
    assert all(s > e for s, e in zip(curve["score2"], curve["eps2"], strict=True))  # it learned


def test_score_error_figure(learned, tmp_path):
    curve = score_error_curve(learned, VP, [0.05, 0.2, 0.8], n=200, seed=0)
    study = {"networks": [{"train_steps": 30, **curve}]}
    paths = plot_score_error(study, tmp_path / "eps")
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_report_names_a_network_by_its_training_steps(tmp_path):
    from convergence.claims.learned import NETWORKS, _network_name

    assert _network_name(f"learned:{NETWORKS[0]}") == "network, 600 steps"
    assert _network_name(f"learned:path={NETWORKS[1]},device=cpu") == "network, 6000 steps"
    assert _network_name(f"learned:{tmp_path / 'gone.pt'}") == "network gone.pt"


def test_errors_with_the_network_exceed_the_exact_score(learned):
    target = parse_target(SPEC)
    exact = error("ddim", target, VP, 16, metric="kl", evaluator="logdet", n=500)
    net = error(
        "ddim", target, VP, 16, metric="kl", evaluator="logdet", n=500, perturbation=learned
    )
    assert net.evaluator == "logdet" and math.isfinite(net.value)
    assert net.value > exact.value
    w2 = error(
        "ddpm", target, VP, 16, metric="mmd", evaluator="samples", n=300, perturbation=learned
    )
    assert w2.evaluator == "samples" and math.isfinite(w2.value)


def test_bad_input_fails_with_one_line(learned, checkpoint, tmp_path):
    with pytest.raises(ValueError, match="was trained on 'gmm:d=2,k=2,seed=0', not on this"):
        parse_perturbation(f"learned:{checkpoint}", parse_target("gmm:d=2,k=2,seed=1"))
    with pytest.raises(ValueError, match="trained for the vp process, not ve"):
        perturbed_score(parse_target(SPEC), make_process("ve"), learned)
    with pytest.raises(ValueError, match="checkpoint"):
        parse_perturbation(f"learned:{tmp_path / 'missing.pt'}", parse_target(SPEC))
    with pytest.raises(ValueError, match="bad parameter"):
        parse_perturbation(f"learned:path={checkpoint},width=3", parse_target(SPEC))


def test_rate_command_takes_a_learned_score(checkpoint, capsys):
    args = ["rate", "--sampler", "ddim", "--target", SPEC, "--steps", "8,16", "--json"]
    assert (
        main([*args, "--evaluator", "logdet", "--n", "300", "--score", f"learned:{checkpoint}"])
        == 0
    )
    out = capsys.readouterr().out
    assert '"perturbation"' in out and "learned:" in out
    assert main([*args, "--score", "network"]) == 2
    assert "--score must be exact or learned:CKPT" in capsys.readouterr().err
    both = [*args, "--score", f"learned:{checkpoint}", "--perturb", "bias:eps=0.1"]
    assert main(both) == 2
    assert "exclusive" in capsys.readouterr().err


def test_checkpoint_save_needs_the_models_config(checkpoint):
    """save_checkpoint is the only writer (guard against a mismatched sidecar)."""
    from convergence.learned.checkpoint import load_checkpoint
    from convergence.learned.network import NetworkConfig

    model, meta = load_checkpoint(checkpoint, device="cpu")
    with pytest.raises(ValueError, match="differs from network_config"):
        save_checkpoint(
            checkpoint.with_name("x.pt"),
            model,
            NetworkConfig(dim=2, process="vp", width=64),
            TrainConfig(target=SPEC, process="vp", steps=1),
            step=0,
            history=[],
        )
