import json
import re
import subprocess
import sys

import pytest

from convergence.cli import main

ACCEPTANCE = [  # (sampler, metric, expected slope): issue 2 acceptance, all with evaluator gaussian
    ("ddim", "kl", -2.0),
    ("ddim", "w2", -1.0),
    ("ode-heun", "w2", -2.0),
    ("ddpm", "w2", -1.0),
    ("em", "w2", -1.0),
]
STEPS = "20,40,80,160,320,640,1280"


def run_json(capsys, *args):
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("sampler, metric, slope", ACCEPTANCE)
def test_rate_acceptance(capsys, sampler, metric, slope):
    args = [
        "rate",
        "--sampler",
        sampler,
        "--target",
        "gaussian:d=2",
        "--process",
        "vp",
        "--metric",
        metric,
        "--steps",
        STEPS,
    ]
    out = run_json(capsys, *args)
    assert out["evaluator"] == "gaussian"
    assert abs(out["fit"]["slope"] - slope) <= 0.05
    assert out["fit"]["ci_low"] <= out["fit"]["slope"] <= out["fit"]["ci_high"]
    assert out["expected_slope"] == slope and out["verdict"] == "consistent"
    assert [p["steps"] for p in out["points"]] == [int(s) for s in STEPS.split(",")]
    assert set(out) >= {
        "sampler",
        "target",
        "process",
        "metric",
        "evaluator",
        "points",
        "fit",
        "expected_slope",
        "verdict",
    }
    assert set(out["points"][0]) == {"steps", "nfe", "error", "uncertainty"}
    if sampler == "ddim" and metric == "kl":  # deterministic: the same command prints the same
        assert run_json(capsys, *args) == out


def test_samplers_json(capsys):
    rows = run_json(capsys, "samplers")
    by_name = {r["name"]: r for r in rows}
    assert by_name["ode-heun"]["nfe_per_step"] == 2 and by_name["ode-heun"]["expected_order"] == 2
    assert by_name["ddpm"]["stochastic"] is True and by_name["ddim"]["stochastic"] is False
    for r in rows:
        assert set(r) >= {
            "name",
            "family",
            "stochastic",
            "nfe_per_step",
            "expected_order",
            "claims",
        }
        assert all({"metric", "exponent", "source"} <= set(c) for c in r["claims"])


def test_samplers_and_targets_tables(capsys):
    assert main(["samplers"]) == 0
    assert "ode-heun" in capsys.readouterr().out
    assert main(["targets"]) == 0
    assert "gmm:d=...,k=...,seed=...,cov=..." in capsys.readouterr().out
    names = {t["name"] for t in run_json(capsys, "targets")}
    assert names == {"gaussian", "gmm", "planted", "product"}


def test_rate_table_output(capsys):
    assert main(["rate", "--sampler", "ode-euler", "--steps", "10,20,40,80"]) == 0
    text = capsys.readouterr().out
    assert "local slope" in text and "fitted slope -1." in text and "expected slope -2.00" in text


def test_samples_evaluator_reports_floor(capsys):
    out = run_json(
        capsys,
        "rate",
        "--sampler",
        "ddpm",
        "--target",
        "gmm:d=2,k=2,seed=0",
        "--metric",
        "w2",
        "--steps",
        "1,2",
        "--n",
        "300",
        "--evaluator",
        "samples",
    )
    assert out["evaluator"] == "samples"
    assert all(p["uncertainty"] > 0.05 for p in out["points"])
    assert out["verdict"] == "unresolved" and out["fit"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["rate", "--steps", "10,5"], "strictly increasing"),
        (["rate", "--steps", "a,b"], "comma-separated integers"),
        (["rate", "--sampler", "nope"], "invalid choice: 'nope'"),
        (["rate", "--target", "banana:d=2"], "unknown target 'banana'"),
        (["rate", "--target", "gaussian:q=2"], "bad parameter 'q=2'"),
        (["rate", "--target", "gmm:d=2"], "missing k, seed"),
        (
            ["rate", "--metric", "tv", "--sampler", "ddpm", "--target", "gmm:d=8,k=2,seed=0"],
            "no evaluator measures 'tv'",
        ),
        (["rate", "--evaluator", "grid", "--target", "gmm:d=3,k=2,seed=0"], "'grid' does not"),
        (["rate", "--perturb", "wobble:eps=1"], "unknown"),
        (["rate", "--perturb", "sin:eps=-1,omega=2"], "eps must be"),
        (["rate", "--option", "variance=bad", "--sampler", "ddpm", "--steps", "2,4"], "not one of"),
        (["rate", "--t-end", "2", "--steps", "2,4"], r"t_end must lie in \(0, 1\)"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("convergence: error: ")
    assert re.search(message, err)


def test_console_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "convergence.cli", "rate", "--steps", "1,5"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fitted slope" in proc.stdout and "expected slope -2.00" in proc.stdout


def test_rate_refuses_adaptive_samplers(capsys):
    assert main(["rate", "--sampler", "ggf"]) == 2
    assert "is adaptive" in capsys.readouterr().err


def test_rate_with_a_perturbed_score_reports_its_size(capsys):
    out = run_json(
        capsys,
        "rate",
        "--sampler",
        "ddpm",
        "--target",
        "gmm:d=1,k=3,seed=0",
        "--metric",
        "tv",
        "--steps",
        "8,16",
        "--perturb",
        "sin:eps=0.02,omega=3",
    )
    assert out["evaluator"] == "grid"
    size = out["perturbation"]
    assert size["spec"] == "sin:eps=0.02,omega=3" and size["method"].startswith("closed form")
    assert 0.005 < size["eps_score"] < 0.03 and size["eps_jacobi"] == pytest.approx(
        3 * size["eps_score"], rel=0.2
    )
