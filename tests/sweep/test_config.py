"""Sweep configs: validation with one-line errors naming the key path, expansion into tasks."""

import hashlib
import json
import pickle
from pathlib import Path

import pytest

from convergence.samplers import REGISTRY
from convergence.sweep.config import ConfigError, Task, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
FILE = "sweep.toml"

BASE = {"targets": '["gaussian:d=2"]', "steps": "[10, 20]", "metrics": '["kl"]'}
DDIM = '[[samplers]]\nname = "ddim"\n'


def toml(samplers: str = DDIM, **over: str | None) -> str:
    """The base config with top-level keys replaced (None removes a key) and a samplers part."""
    items = {**BASE, **over}
    return "".join(f"{k} = {v}\n" for k, v in items.items() if v is not None) + samplers


def sampler(name: str, extra: str = "") -> str:
    return f'[[samplers]]\nname = "{name}"\n{extra}'


VE_ONLY = [s.name for s in REGISTRY.values() if s.processes == ("ve",)]
VP_ONLY = [s.name for s in REGISTRY.values() if s.processes == ("vp",)]

INVALID = [
    # (id, config text, key path that must be named)
    ("targets-not-list", toml(targets='"gaussian:d=2"'), "targets"),
    ("target-not-string", toml(targets='["gaussian:d=2", 3]'), "targets[1]"),
    ("unknown-top-level-key", toml(colour="1"), "colour"),
    ("unknown-sampler-key", toml(samplers=sampler("ddim", "speed = 1\n")), "samplers[0].speed"),
    ("unknown-sampler", toml(samplers=DDIM + sampler("ddim2")), "samplers[1].name"),
    ("sampler-name-missing", toml(samplers="[[samplers]]\nsteps = [4]\n"), "samplers[0].name"),
    (
        "unknown-option",
        toml(samplers=sampler("ddim", "options = {foo = 1}\n")),
        "samplers[0].options.foo",
    ),
    (
        "bad-option-choice",
        toml(samplers=sampler("ddim", 'options = {spacing = "cubic"}\n')),
        "samplers[0].options.spacing",
    ),
    (
        "eps-rel-negative",
        toml(
            samplers=DDIM
            + DDIM.replace("ddim", "ode-heun")
            + sampler("ggf", "options = {eps_rel = -0.1}\n")
        ),
        "samplers[2].options.eps_rel",
    ),
    (
        "eps-rel-zero",
        toml(samplers=sampler("ggf", "options = {eps_rel = 0}\n")),
        "samplers[0].options.eps_rel",
    ),
    (
        "option-wrong-type",
        toml(samplers=sampler("ddim", 'options = {eta = "big"}\n')),
        "samplers[0].options.eta",
    ),
    (
        "int-option-float",
        toml(samplers=sampler("pc", "options = {n_steps = 1.5}\n")),
        "samplers[0].options.n_steps",
    ),
    (
        "bool-option-int",
        toml(samplers=sampler("ggf", "options = {extrapolation = 1}\n")),
        "samplers[0].options.extrapolation",
    ),
    ("options-not-table", toml(samplers=sampler("ddim", "options = 3\n")), "samplers[0].options"),
    (
        "sampler-own-validate",
        toml(samplers=sampler("dpm-solver-2", "options = {r1 = 2.0}\n")),
        "samplers[0].options",
    ),
    ("unknown-target-family", toml(targets='["gaussian:d=2", "cauchy:d=2"]'), "targets[1]"),
    ("bad-target-parameter", toml(targets='["gaussian:d=2,k=3"]'), "targets[0]"),
    ("target-missing-parameter", toml(targets='["gmm:d=2,k=3"]'), "targets[0]"),
    ("target-bad-value", toml(targets='["gaussian:d=two"]'), "targets[0]"),
    ("repeated-target", toml(targets='["gaussian:d=2", "gaussian:d=2"]'), "targets[1]"),
    ("unknown-metric", toml(metrics='["kl", "kld"]'), "metrics[1]"),
    ("unknown-evaluator", toml(evaluator='"exact"'), "evaluator"),
    ("empty-targets", toml(targets="[]"), "targets"),
    ("empty-steps", toml(steps="[]"), "steps"),
    ("empty-metrics", toml(metrics="[]"), "metrics"),
    ("empty-samplers", toml(samplers="samplers = []\n"), "samplers"),
    ("samplers-not-array", toml(samplers='[samplers]\nname = "ddim"\n'), "samplers"),
    ("missing-samplers", toml(samplers=""), "samplers"),
    ("missing-targets", toml(targets=None), "targets"),
    ("missing-steps", toml(steps=None), "steps"),
    ("zero-steps", toml(steps="[0, 10]"), "steps[0]"),
    ("negative-steps", toml(steps="[-5]"), "steps[0]"),
    ("repeated-steps", toml(steps="[10, 10]"), "steps[1]"),
    ("decreasing-steps", toml(steps="[10, 40, 20]"), "steps[2]"),
    (
        "sampler-steps-decreasing",
        toml(samplers=sampler("ddim", "steps = [8, 4]\n")),
        "samplers[0].steps[1]",
    ),
    ("steps-float", toml(steps="[10, 20.5]"), "steps[1]"),
    ("negative-seed", toml(seeds="[0, -1]"), "seeds[1]"),
    ("zero-seed-count", toml(seeds="0"), "seeds"),
    ("seeds-string", toml(seeds='"0"'), "seeds"),
    ("n-too-small", toml(n="1"), "n"),
    ("bad-init", toml(init='"random"'), "init"),
    ("bad-noise", toml(noise='"pink"'), "noise"),
    ("unknown-process", toml(process='"vpsde"'), "process"),
    ("process-list-item", toml(process='["vp", 3]'), "process[1]"),
    ("t-end-above-range", toml(t_end="1.5"), "t_end"),
    ("t-end-zero", toml(t_end="0.0"), "t_end"),
    ("t-end-string", toml(t_end='"small"'), "t_end"),
    (
        "d-without-dimensions",
        toml(targets='["gaussian:d=2", "product:d={d},k=2,seed=0"]'),
        "dimensions",
    ),
    ("dimensions-unused", toml(dimensions="[1, 2]"), "dimensions"),
    ("dimension-zero", toml(targets='["gaussian:d={d}"]', dimensions="[0]"), "dimensions[0]"),
    ("bool-for-int-n", toml(n="true"), "n"),
    ("bool-in-steps", toml(steps="[true, 20]"), "steps[0]"),
    ("bool-for-seeds", toml(seeds="true"), "seeds"),
    ("int-for-bool", toml(final_noise="1"), "final_noise"),
    ("name-not-string", toml(name="3"), "name"),
    ("malformed-toml", toml() + "steps = [1,\n", "<toml>"),
    ("malformed-toml-value", toml(metrics='["kl"'), "<toml>"),
    (
        "bad-perturbation-missing-key",
        toml(perturbations='["none", "sin:eps=0.01"]'),
        "perturbations[1]",
    ),
    ("bad-perturbation-kind", toml(perturbations='["gauss:eps=1"]'), "perturbations[0]"),
    ("bad-perturbation-value", toml(perturbations='["bias:eps=-1"]'), "perturbations[0]"),
    (
        "repeated-sampler",
        toml(samplers=DDIM + sampler("ddim", "options = {eta = 0.0}\n")),
        "samplers[1]",
    ),
]
if VE_ONLY:
    INVALID.append(("process-unsupported", toml(samplers=sampler(VE_ONLY[0])), "samplers[0].name"))
if VP_ONLY:
    INVALID.append(
        (
            "process-unsupported-vp-only",
            toml(process='["vp", "ve"]', samplers=sampler(VP_ONLY[0])),
            "samplers[0].name",
        )
    )


@pytest.mark.parametrize(("text", "key"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_config_names_key_in_one_line(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path=FILE)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{FILE}: {key}: "), message
    assert info.value.key == key and info.value.path == FILE
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("text", "key"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_config_exits_2_from_the_command_line(text: str, key: str, tmp_path, capsys):
    from convergence.cli import main

    path = tmp_path / FILE
    path.write_text(text)
    assert main(["sweep", str(path), "--dry-run"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and f": {key}: " in err, err
    assert not captured.out


def test_enough_invalid_cases_and_processes_covered() -> None:
    assert len(INVALID) >= 25
    assert VE_ONLY or VP_ONLY, (
        "no sampler with a restricted process: the unsupported case is untested"
    )


def test_eps_rel_message_is_exact() -> None:
    text = toml(
        samplers=DDIM
        + DDIM.replace("ddim", "ode-heun")
        + sampler("ggf", "options = {eps_rel = -0.1}\n")
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, path=FILE)
    assert str(info.value) == "sweep.toml: samplers[2].options.eps_rel: must be > 0, got -0.1"
    assert info.value.rule == "must be > 0"


def test_messages_state_rule_and_value() -> None:
    cases = {
        toml(steps="[]"): "sweep.toml: steps: must be a non-empty list, got []",
        toml(
            targets='"gaussian:d=2"'
        ): 'sweep.toml: targets: must be a list of strings, got "gaussian:d=2"',
        toml(n="true"): "sweep.toml: n: must be an integer, got true",
        toml(
            steps="[10, 10]"
        ): "sweep.toml: steps[1]: must be > steps[0] (strictly increasing), got 10",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_config(text, path=FILE)
        assert str(info.value) == expected


def test_malformed_toml_reports_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(toml(metrics='["kl"'), path=FILE)
    assert str(info.value) == "sweep.toml: <toml>: Unclosed array (at line 4, column 1)"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {path}: no such file"


def test_config_error_pickles() -> None:
    err = ConfigError("a.toml", "n", "must be >= 2", 1)
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) == "a.toml: n: must be >= 2, got 1"
    assert (back.path, back.key, back.rule) == ("a.toml", "n", "must be >= 2")


GRID = """
name = "grid"
process = ["vp", "ve"]
targets = ["gaussian:d=2", "product:d={d},k=2,seed=0"]
dimensions = [1, 3]
steps = [10, 20, 40]
metrics = ["kl", "tv"]
seeds = 2
perturbations = ["none", "bias:eps=0.1"]

[[samplers]]
name = "ddim"
options = { eta = 0.5, spacing = "quadratic" }

[[samplers]]
name = "ode-heun"
steps = [5, 10]
"""


def test_valid_config_expands_the_full_grid() -> None:
    config = parse_config(GRID, path="dir/grid.toml")
    tasks = config.tasks()
    # processes x targets x (ddim steps + ode-heun steps) x perturbations x seeds x metrics
    assert len(tasks) == 2 * 3 * (3 + 2) * 2 * 2 * 2
    assert {(t.target, t.dim) for t in tasks} == {
        ("gaussian:d=2", 2),
        ("product:d=1,k=2,seed=0", 1),
        ("product:d=3,k=2,seed=0", 3),
    }
    assert {t.steps for t in tasks if t.sampler == "ode-heun"} == {5, 10}
    assert {t.steps for t in tasks if t.sampler == "ddim"} == {10, 20, 40}
    assert {t.seed for t in tasks} == {0, 1}
    assert {t.perturbation for t in tasks} == {None, "bias:eps=0.1"}
    assert {t.options for t in tasks if t.sampler == "ddim"} == {
        (("eta", 0.5), ("spacing", "quadratic"))
    }
    assert config.source == GRID and config.path == "dir/grid.toml" and config.name == "grid"
    keys = [t.key() for t in tasks]
    assert len(set(keys)) == len(keys)
    assert keys == [t.key() for t in parse_config(GRID, path="other.toml").tasks()]
    assert len({t for t in tasks}) == len(tasks)  # hashable and distinct


def test_defaults() -> None:
    config = parse_config(toml(), path="some/where/my-sweep.toml")
    assert config.name == "my-sweep"
    (task,) = {t for t in config.tasks() if t.steps == 10}
    assert (task.process, task.evaluator, task.seed, task.n, task.init) == (
        "vp",
        "auto",
        0,
        2000,
        "exact",
    )
    assert (task.t_end, task.final_noise, task.denoise, task.noise) == (
        None,
        False,
        False,
        "independent",
    )
    assert task.perturbation is None and task.options == ()
    assert parse_config(toml()).name == "sweep"


def test_key_is_sha256_of_canonical_json() -> None:
    config = parse_config(toml(samplers=sampler("ddim", "options = {eta = 1}\n"), t_end="0.002"))
    task = config.tasks()[0]
    canonical = (
        '{"denoise":false,"dim":2,"evaluator":"auto","final_noise":false,"init":"exact",'
        '"metric":"kl","n":2000,"noise":"independent","options":{"eta":1.0},"perturbation":null,'
        '"process":"vp","sampler":"ddim","seed":0,"steps":10,"t_end":0.002,"target":"gaussian:d=2"}'
    )
    assert task.key() == hashlib.sha256(canonical.encode()).hexdigest()
    assert json.loads(json.dumps(task.as_dict())) == task.as_dict()
    assert Task.from_dict(task.as_dict()) == task
    assert Task.from_dict(json.loads(json.dumps(task.as_dict()))).key() == task.key()


def test_option_order_and_int_for_float_do_not_change_keys() -> None:
    a = parse_config(
        toml(samplers=sampler("ddim", 'options = { eta = 0.5, spacing = "quadratic" }\n'))
    )
    b = parse_config(
        toml(samplers=sampler("ddim", 'options = { spacing = "quadratic", eta = 0.5 }\n'))
    )
    assert [t.key() for t in a.tasks()] == [t.key() for t in b.tasks()]
    c = parse_config(toml(samplers=sampler("ddim", "options = { eta = 1 }\n")))
    d = parse_config(toml(samplers=sampler("ddim", "options = { eta = 1.0 }\n")))
    assert [t.key() for t in c.tasks()] == [t.key() for t in d.tasks()]
    assert c.tasks()[0].options == (("eta", 1.0),)


def test_seed_count_and_adaptive_sampler() -> None:
    config = parse_config(
        toml(seeds="3", samplers=sampler("ode-rk45", "options = {rtol = 1e-4}\n"))
    )
    assert [t.seed for t in config.tasks()] == [0, 0, 1, 1, 2, 2]
    assert {t.steps for t in config.tasks()} == {10, 20}  # accepted, ignored by the sampler


def test_sampler_entries_may_split_steps() -> None:
    text = toml(samplers=sampler("ddim", "steps = [4, 8]\n") + sampler("ddim", "steps = [16]\n"))
    assert [t.steps for t in parse_config(text).tasks()] == [4, 8, 16]


def test_estimate_cost_model() -> None:
    config = parse_config(GRID)
    cost = config.estimate_cost()
    assert cost["tasks"] == len(config.tasks()) == sum(cost["by_sampler"].values())
    assert cost["refused"] + sum(cost["by_evaluator"].values()) == cost["tasks"]
    nfe = {"ddim": 1, "ode-heun": 2}
    assert cost["nfe"] == sum(t.steps * nfe[t.sampler] for t in config.tasks())
    # a gaussian-only config: every task costs steps * nfe_per_step * (d + 1) point evaluations
    gauss = parse_config(toml(metrics='["kl", "w2"]', samplers=DDIM + sampler("ode-heun")))
    cost = gauss.estimate_cost()
    assert cost["by_evaluator"] == {"gaussian": 8}
    assert cost["cost"] == 2 * (10 + 20) * (1 + 2) * 3


def test_explicit_evaluator_that_refuses_is_not_a_config_error() -> None:
    config = parse_config(toml(evaluator='"tensor"'))
    assert config.estimate_cost()["refused"] == len(config.tasks()) == 2


@pytest.mark.parametrize(("name", "count"), [("example_ddim_heun", 20), ("example_speed", 280)])
def test_example_configs(name: str, count: int) -> None:
    config = load_config(ROOT / "reports" / "configs" / f"{name}.toml")
    assert len(config.tasks()) == count
    assert config.estimate_cost()["by_evaluator"] == {"gaussian": count}
