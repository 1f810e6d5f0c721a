"""Score networks: denoising score matching, determinism, resuming, safe checkpoints, devices, CLI.

Everything trains tiny networks (d = 2, width <= 32) for at most 200 steps on the CPU.
"""

import json
import pickle
import shutil
from dataclasses import asdict, replace

import pytest
import torch

from analytic.processes import make_process
from convergence.cli import main
from convergence.learned import (
    NetworkConfig,
    ScoreNetwork,
    TrainConfig,
    load_checkpoint,
    resolve_device,
    sidecar_path,
    train,
)
from convergence.learned.checkpoint import sha256_of
from convergence.learned.training import draw_batch, dsm_loss
from convergence.targets import parse_target

SPEC = "gmm:d=2,k=3,seed=0"
NET = NetworkConfig(2, "vp", width=32, blocks=2, fourier=8)


def tiny(steps: int, process: str = "vp", **kw) -> TrainConfig:
    return TrainConfig(SPEC, process, steps=steps, batch=64, lr=3e-3, **kw)


def weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def relative_score_error(model, process_name: str, t: float, n: int = 2000) -> float:
    """E|s_theta - grad log q_t|^2 / E|grad log q_t|^2 over exact samples of q_t."""
    target, process = parse_target(SPEC), make_process(process_name)
    x = target.noised(process, t).sample(n, seed=7)
    exact = target.score_fn(process)(x, t)
    with torch.no_grad():
        learned = model.score(x.float(), t).double()
    return float((learned - exact).square().sum(1).mean() / exact.square().sum(1).mean())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "net.pt"
    model, history = train(tiny(200), NET, device="cpu", checkpoint=path)
    return model, history, path


def copy_checkpoint(path, tmp_path):
    dest = tmp_path / path.name
    shutil.copy(path, dest)
    shutil.copy(sidecar_path(path), sidecar_path(dest))
    return dest


# ---- training ----------------------------------------------------------------------------------


def test_loss_decreases_and_the_score_is_learned(trained):
    model, history, _ = trained
    assert [s for s, _ in history] == list(range(1, 201))
    # the loss is DSM minus its constant part: 0 for the initial (zero) output layer
    assert history[0][1] == 0.0
    first = sum(v for _, v in history[:20]) / 20
    last = sum(v for _, v in history[-20:]) / 20
    assert last < first - 0.2
    # against the exact score of the mixture (the zero score has relative error 1)
    assert relative_score_error(model, "vp", 0.5) < 0.2


def test_ve_with_score_parameterisation_trains():
    config = TrainConfig(SPEC, "ve", steps=150, batch=64, lr=3e-3, weighting="relative")
    net = NetworkConfig(2, "ve", width=32, blocks=1, fourier=8, predict="score")
    model, history = train(config, net, device="cpu")
    first = sum(v for _, v in history[:20]) / 20
    last = sum(v for _, v in history[-20:]) / 20
    assert last < first - 0.2
    assert relative_score_error(model, "ve", 0.5) < 0.3


def test_parameterisations_and_time_inputs():
    net = ScoreNetwork(replace(NET, predict="eps"), seed=3)
    with torch.no_grad():
        net.output.weight.normal_(generator=torch.Generator().manual_seed(0))  # non-zero output
    other = ScoreNetwork(replace(NET, predict="score"), seed=3)
    other.load_state_dict(net.state_dict())
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    t, vp = 0.3, make_process("vp")
    sigma, c_s = vp.sigma(t), (vp.alpha(t) ** 2 * NET.s_data**2 + vp.sigma(t) ** 2) ** 0.5
    with torch.no_grad():
        F = net(x, t)
        assert torch.allclose(net.score(x, t), -F / sigma, rtol=1e-6)
        assert torch.allclose(other.score(x, t), F / c_s, rtol=1e-6)
        per_sample = net.score(x, torch.full((5,), t))
        assert torch.allclose(per_sample, net.score(x, t), rtol=1e-5, atol=1e-6)
        assert net.score(x.double(), t).dtype == torch.float64


@pytest.mark.parametrize("weighting", ["sigma2", "relative"])
def test_dsm_loss_is_the_weighted_dsm_loss_minus_a_constant(weighting):
    net = ScoreNetwork(replace(NET, s_data=1.3, predict="eps"), seed=2)
    with torch.no_grad():
        net.output.weight.normal_(generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(5)
    t = 0.001 + 0.999 * torch.rand(64, generator=gen, dtype=torch.float64)
    x0 = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    xi = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    vp = make_process("vp")
    alpha, sigma = vp.alpha(t)[:, None], vp.sigma(t)[:, None]
    with torch.no_grad():
        F = net((alpha * x0 + sigma * xi).float(), t.float()).double()
    lam = sigma**2 if weighting == "sigma2" else alpha**2 * 1.3**2 + sigma**2
    # lambda |s_theta + xi / sigma|^2 with s_theta = -F / sigma, minus lambda |xi / sigma|^2
    full = (lam * (-F / sigma + xi / sigma).square()).mean()
    constant = (lam * (xi / sigma).square()).mean()
    with torch.no_grad():
        got = float(dsm_loss(net, weighting, t, x0, xi))
    assert got == pytest.approx(float(full - constant), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("process_name", ["vp", "ve"])
def test_training_batches(process_name):
    process = make_process(process_name)
    config = TrainConfig(SPEC, process_name, steps=10, batch=4001, time_sampling="log-snr")
    t, x0, xi = draw_batch(config, parse_target(SPEC), process, 3)
    assert t.shape == (4001,) and x0.shape == xi.shape == (4001, 2)
    m = 2001  # antithetic pairs (x0, t, xi), (x0, t, -xi)
    assert torch.equal(xi[m:], -xi[: 4001 - m]) and torch.equal(t[m:], t[: 4001 - m])
    assert float(t.min()) >= process.t_end_default and float(t.max()) <= 1.0
    # stratified uniform log-SNR: the mean of lambda is the midpoint to O(1/m)
    lam = process.lam(t[:m])
    mid = 0.5 * (process.lam(1.0) + process.lam(process.t_end_default))
    assert abs(float(lam.mean()) - mid) < 1e-2
    t2, _, _ = draw_batch(config, parse_target(SPEC), process, 3)
    assert torch.equal(t, t2)  # a pure function of (seed, step)


def test_a_run_is_a_function_of_its_seed():
    a, ha = train(tiny(30), NET, device="cpu")
    b, hb = train(tiny(30), NET, device="cpu")
    c, _ = train(tiny(30, seed=1), NET, device="cpu")
    assert same_weights(weights(a), weights(b)) and ha == hb
    assert not same_weights(weights(a), weights(c))


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_equals_the_uninterrupted_run(tmp_path, ema):
    config = tiny(60, ema=ema, time_sampling="log-snr")
    straight, h_straight = train(config, NET, device="cpu")
    path = tmp_path / "half.pt"
    _, h_half = train(config, NET, device="cpu", checkpoint=path, stop_at=30)
    assert json.loads(sidecar_path(path).read_text())["step"] == 30 and len(h_half) == 30
    resumed, h_resumed = train(config, device="cpu", resume=path)
    assert same_weights(weights(straight), weights(resumed))
    assert h_resumed == h_straight
    # resuming with a larger total continues (new cosine horizon) from the stored step
    _, h_more = train(tiny(40, ema=ema, time_sampling="log-snr"), device="cpu", resume=path)
    assert [s for s, _ in h_more] == list(range(1, 41)) and h_more[:30] == h_half


def test_resume_refuses_other_settings(trained):
    _, _, path = trained
    with pytest.raises(ValueError, match="trained with lr=0.003, not 0.001"):
        train(TrainConfig(SPEC, "vp", steps=300, batch=64), device="cpu", resume=path)
    with pytest.raises(ValueError, match="at step 200 already"):
        train(tiny(200), device="cpu", resume=path)


# ---- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_round_trip(trained):
    model, history, path = trained
    loaded, meta = load_checkpoint(path, device="cpu")
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(2))
    t = torch.linspace(0.01, 1.0, 64)
    with torch.no_grad():
        for time in (0.001, 0.3, t):
            assert torch.equal(loaded.score(x, time), model.score(x, time))
    assert meta["train"]["target"] == SPEC and meta["train"]["process"] == "vp"
    assert meta["network"] == asdict(replace(NET, s_data=model.config.s_data))
    assert meta["step"] == 200 and meta["sha256"] == sha256_of(path)
    assert meta["final_loss"] == pytest.approx(sum(v for _, v in history[-50:]) / 50)
    assert meta["torch"] == torch.__version__
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_tampered_checkpoint_fails(trained, tmp_path):
    path = copy_checkpoint(trained[2], tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the sha256 in its sidecar"):
        load_checkpoint(path, device="cpu")
    path.write_bytes(bytes(data[:-100]))  # truncated
    with pytest.raises(ValueError, match="does not match the sha256"):
        load_checkpoint(path, device="cpu")
    sidecar_path(path).unlink()
    with pytest.raises(ValueError, match="has no sidecar"):
        load_checkpoint(path, device="cpu")


class _Payload:
    """Unpickling this runs exec(code): what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.code = f"open({str(marker)!r}, 'w').write('pwned')"

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_without_running(trained, tmp_path, writer):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))  # the payload is live under plain pickle
    assert control.read_text() == "pwned"
    path = copy_checkpoint(trained[2], tmp_path)
    marker = tmp_path / "marker"
    if writer == "pickle":
        path.write_bytes(pickle.dumps({"model": _Payload(marker)}, protocol=2))
    else:
        torch.save({"model": _Payload(marker)}, path)
    meta = json.loads(sidecar_path(path).read_text())
    meta["sha256"] = sha256_of(path)  # an attacker can rewrite the sidecar too
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="is not a weights-only checkpoint; refused") as exc:
        load_checkpoint(path, device="cpu")
    assert "\n" not in str(exc.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "field, value, parameter", [("width", 16, "embed1.weight"), ("dim", 3, "input.weight")]
)
def test_wrong_shape_checkpoint_fails(trained, tmp_path, field, value, parameter):
    path = copy_checkpoint(trained[2], tmp_path)
    meta = json.loads(sidecar_path(path).read_text())
    meta["network"][field] = value
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"parameter ({parameter}).* has shape") as exc:
        load_checkpoint(path, device="cpu")
    assert "\n" not in str(exc.value)


def test_sidecar_fourier_change_names_both_shapes(trained, tmp_path):
    path = copy_checkpoint(trained[2], tmp_path)
    meta = json.loads(sidecar_path(path).read_text())
    meta["network"]["fourier"] = 4
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"frequencies has shape \(8,\) .* but \(4,\)"):
        load_checkpoint(path, device="cpu")


# ---- devices -----------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_cuda_without_cuda_fails_clearly():
    with pytest.raises(ValueError, match="CUDA is not available on this machine; use --device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:0")
    assert resolve_device("auto") == torch.device("cpu")


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    for bad in ("tpu", "gpu", "cuda:x", ""):
        with pytest.raises(ValueError, match="allowed: auto, cpu, cuda, cuda:N"):
            resolve_device(bad)


# ---- validation and the command line -----------------------------------------------------------


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: tiny(0), "steps must be an integer >= 1, got 0"),
        (lambda: TrainConfig(SPEC, "vx", steps=5), "unknown process 'vx'; allowed: vp, ve"),
        (lambda: tiny(5, time_sampling="x"), "unknown time_sampling 'x'"),
        (lambda: tiny(5, weighting="none"), "unknown weighting 'none'; allowed: sigma2, rel"),
        (lambda: TrainConfig("gmm:d=2", "vp", steps=5), "missing k, seed"),
        (lambda: NetworkConfig(2, "vp", predict="x0"), "unknown predict 'x0'; allowed: eps"),
        (lambda: NetworkConfig(2, "vp", width=0), "width must be an integer >= 1"),
        (lambda: train(tiny(5), NetworkConfig(3, "vp"), device="cpu"), "cannot train on"),
    ],
)
def test_bad_inputs_fail_with_one_line(build, message):
    with pytest.raises(ValueError, match=message) as exc:
        build()
    assert "\n" not in str(exc.value)


def test_cli_train_and_resume(tmp_path, capsys):
    out = tmp_path / "cli.pt"
    common = ["train", "--target", SPEC, "--batch", "32", "--device", "cpu", "--out", str(out)]
    sizes = ["--width", "16", "--blocks", "1", "--no-progress"]
    assert main([*common, "--steps", "40", *sizes]) == 0
    printed = capsys.readouterr().out
    assert "device: cpu" in printed and f"wrote {out}" in printed and f"wrote {out}.json" in printed
    model, meta = load_checkpoint(out, device="cpu")
    assert meta["step"] == 40 and model.config.width == 16 and meta["train"]["batch"] == 32
    assert main([*common, "--steps", "60", "--resume", str(out), "--no-progress"]) == 0
    assert "trained to step 60" in capsys.readouterr().out
    assert load_checkpoint(out, device="cpu")[1]["step"] == 60


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "0"], "steps must be an integer >= 1, got 0"),
        (["--steps", "5", "--process", "vx"], "invalid choice: 'vx'"),
        (["--steps", "5", "--predict", "x0"], "invalid choice: 'x0'"),
        (["--steps", "5", "--device", "tpu"], "unknown device 'tpu'"),
    ]
    + (
        []
        if torch.cuda.is_available()
        else [(["--steps", "5", "--device", "cuda"], "CUDA is not available")]
    ),
)
def test_cli_bad_inputs(tmp_path, capsys, extra, message):
    out = tmp_path / "x.pt"
    assert main(["train", "--target", SPEC, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convergence: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()
