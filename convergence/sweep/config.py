"""Sweep configurations in TOML: the schema, its validation and the expansion into tasks.

A sweep config describes a grid of runs (issue 5): processes x targets (x dimensions) x samplers
(with options) x score perturbations x seeds x metrics x step counts, measured with one evaluator
setting. ``load_config(path)`` / ``parse_config(text)`` validate it and return a ``SweepConfig``
whose ``tasks()`` is the full cartesian product as ``Task`` objects, each with a stable key (the
sha256 of its canonical JSON), which the results store uses to skip finished work.

Schema (keys not listed are errors, at every level; "req." = required)::

    name = "ddim-vs-heun"          # default: the file's stem ("sweep" for text without a file)
    process = "vp"                 # "vp" | "ve" or a list of them; default "vp"
    targets = ["gaussian:d=2", "product:d={d},k=3,seed=0"]    # req.; convergence.targets specs
    dimensions = [1, 2, 4]         # positive ints substituted for "{d}" in targets; required iff
                                   # some target contains "{d}", an error if none does
    steps = [10, 20, 40, 80]       # positive ints, strictly increasing; req. unless every
                                   # [[samplers]] entry gives its own
    metrics = ["kl", "tv"]         # req.; each in convergence.evaluators.METRICS
    evaluator = "auto"             # one of convergence.evaluators.EVALUATORS; default "auto"
    seeds = [0]                    # distinct non-negative ints, or an int N >= 1 for 0..N-1
    n = 2000                       # samples / trajectories where the evaluator samples; >= 2
    perturbations = ["none"]       # "none" (exact score) or convergence.scores specs
    init = "exact"                 # "exact" | "prior"
    t_end = 1e-3                   # optional, in (0, 1); default: the process's own
    final_noise = false
    denoise = false
    noise = "independent"          # "independent" | "brownian"

    [[samplers]]                   # req., at least one
    name = "ddim"                  # req.; a name in convergence.samplers.REGISTRY
    options = { eta = 0.5 }        # optional; checked against the sampler's spec (below)
    steps = [10, 20]               # optional; replaces the top-level steps for this sampler

Sampler options: unknown names and values outside the spec's ``choices`` are refused through
``SamplerSpec.resolve_options``; a value must have its default's type (bool, int, str, or a
number where the default is a float; a number where the default is None); options whose default is
a positive number must be > 0; then the sampler's own ``validate`` runs for every process and step
count of the config. Options keep the names the user wrote (defaults are not filled in), with ints
given for float options stored as floats, so ``eta = 0`` and ``eta = 0.0`` give the same key.

Adaptive samplers (``spec.adaptive``, e.g. ``ode-rk45``, ``ggf``) accept a steps list like any
other sampler, but their accuracy is set by their tolerances and the step count is ignored: each
step count repeats the same run under a different key.

Not checked here: whether an evaluator applies to a task (the runner records a task whose
evaluator refuses as failed), so a metric that no evaluator can measure for some target is allowed.

Every error is a ``ConfigError``: one line "<file>: <key path>: <rule>, got <value>".
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from analytic.processes import PROCESSES, make_process
from convergence.evaluators import EVALUATORS, INITS, METRICS, NOISES, resolve_evaluator
from convergence.samplers import REGISTRY, SamplerSpec, get_spec
from convergence.samplers.base import check_t_end
from convergence.scores import parse_perturbation
from convergence.targets import parse_target

DIM_FIELD = "{d}"
NO_PERTURBATION = "none"
SAMPLING_EVALUATORS = ("logdet", "coupled", "samples")
GRID_NODES_PER_DIM = 100  # rough node count of the grid evaluators per coordinate (cost model)
_NO_VALUE = object()


class ConfigError(ValueError):
    """An invalid sweep config: ``str`` is one line "<file>: <key path>: <rule>[, got <value>]"
    (no ", got" when the rule is a parser's message that already quotes the value).

    ``path`` is the file (as given), ``key`` the key path (``samplers[2].options.eps_rel``,
    ``<toml>`` for a syntax error, the file itself when it is missing), ``rule`` what is allowed.
    """

    def __init__(self, path: str, key: str, rule: str, value: Any = _NO_VALUE) -> None:
        self.path, self.key, self.rule = str(path), key, " ".join(str(rule).split())
        self.value = value
        text = f"{self.path}: {key}: {self.rule}"
        super().__init__(text if value is _NO_VALUE else f"{text}, got {_show(value)}")

    def __reduce__(self):
        extra = () if self.value is _NO_VALUE else (self.value,)
        return (type(self), (self.path, self.key, self.rule, *extra))


def _show(value: Any, limit: int = 80) -> str:
    """A value as TOML-like one-line text (strings quoted, true/false), cut at ``limit`` chars."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value)
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_show(v, limit) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k} = {_show(v, limit)}" for k, v in value.items()) + "}"
    else:
        text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- the task and the validated config -----------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One run: a sampler at one step count on one target, measured in one metric."""

    target: str  # a convergence.targets spec, "{d}" substituted
    dim: int
    process: str  # "vp" | "ve"
    sampler: str
    options: tuple[tuple[str, object], ...]  # sorted by name
    steps: int
    perturbation: str | None  # a convergence.scores spec, None for the exact score
    metric: str
    evaluator: str  # as requested ("auto", "gaussian", ...)
    seed: int
    n: int
    init: str
    t_end: float | None
    final_noise: bool
    denoise: bool
    noise: str

    def as_dict(self) -> dict:
        """The fields as a JSON-able dict, options as a dict (an inf option is JSON Infinity)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["options"] = dict(self.options)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Task:
        """The inverse of ``as_dict`` (options given as a dict are sorted by name)."""
        return cls(**{**data, "options": tuple(sorted(dict(data["options"]).items()))})

    def key(self) -> str:
        """sha256 hex of ``json.dumps(as_dict(), sort_keys=True, separators=(",", ":"))``."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SamplerEntry:
    """One validated ``[[samplers]]`` table: name, the options given (sorted), its step counts."""

    name: str
    options: tuple[tuple[str, object], ...]
    steps: tuple[int, ...]


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep config (module docstring); ``grid_targets`` are the targets after "{d}"
    substitution with their dimensions, in config order."""

    name: str
    processes: tuple[str, ...]
    targets: tuple[str, ...]
    dimensions: tuple[int, ...]
    grid_targets: tuple[tuple[str, int], ...]
    samplers: tuple[SamplerEntry, ...]
    metrics: tuple[str, ...]
    evaluator: str
    seeds: tuple[int, ...]
    n: int
    perturbations: tuple[str | None, ...]
    init: str
    t_end: float | None
    final_noise: bool
    denoise: bool
    noise: str
    source: str
    path: str

    def tasks(self) -> list[Task]:
        """All tasks, in the order process, target, sampler, perturbation, seed, metric, steps
        (the last varies fastest, so one error-vs-steps curve is contiguous)."""
        common = dict(
            evaluator=self.evaluator,
            n=self.n,
            init=self.init,
            t_end=self.t_end,
            final_noise=self.final_noise,
            denoise=self.denoise,
            noise=self.noise,
        )
        out = []
        grid = itertools.product(self.processes, self.grid_targets, self.samplers)
        for process, (target, dim), entry in grid:
            for pert, seed, metric, steps in itertools.product(
                self.perturbations, self.seeds, self.metrics, entry.steps
            ):
                out.append(
                    Task(
                        target=target,
                        dim=dim,
                        process=process,
                        sampler=entry.name,
                        options=entry.options,
                        steps=steps,
                        perturbation=pert,
                        metric=metric,
                        seed=seed,
                        **common,
                    )
                )
        return out

    def estimate_cost(self) -> dict:
        """Task count and a rough cost, in point score evaluations (what ``--dry-run`` prints).

        cost = sum over tasks of steps * nfe_per_step * w, with w the number of points the
        evaluator pushes through the sampler: n for the sampling evaluators (logdet, coupled,
        samples), d + 1 for ``gaussian`` (the moment read-out batch), ~100^d nodes for ``grid``
        and ~100 d for ``tensor`` (GRID_NODES_PER_DIM; the grids adapt, so this is an order of
        magnitude). The evaluator is the one ``auto`` would pick; tasks it refuses cost 0 and are
        counted in ``refused``. Adaptive samplers are charged as if they took ``steps`` steps.
        Per-step overhead (Python, the metric's own cost, e.g. exact W2 on n samples) is not
        modelled: the gaussian evaluator's tasks are cheap in this unit but take ~1 ms per step.

        Returns {"tasks", "cost", "nfe" (sum of steps * nfe_per_step), "refused",
        "by_evaluator" (task count per evaluator), "by_sampler" (task count per sampler)}.
        """
        resolve = _EvaluatorCache(self)
        cost = nfe = refused = 0
        by_evaluator: dict[str, int] = {}
        by_sampler: dict[str, int] = {}
        for task in self.tasks():
            spec = REGISTRY[task.sampler]
            by_sampler[task.sampler] = by_sampler.get(task.sampler, 0) + 1
            kind = resolve(task)
            task_nfe = task.steps * spec.nfe_per_step
            nfe += task_nfe
            if kind is None:
                refused += 1
                continue
            by_evaluator[kind] = by_evaluator.get(kind, 0) + 1
            cost += task_nfe * _points(kind, task.dim, task.n)
        return dict(
            tasks=sum(by_sampler.values()),
            cost=cost,
            nfe=nfe,
            refused=refused,
            by_evaluator=by_evaluator,
            by_sampler=by_sampler,
        )


def _points(kind: str, dim: int, n: int) -> int:
    """Points an evaluator pushes through each step (the cost model of ``estimate_cost``)."""
    if kind in SAMPLING_EVALUATORS:
        return n
    if kind == "gaussian":
        return dim + 1
    return GRID_NODES_PER_DIM**dim if kind == "grid" else GRID_NODES_PER_DIM * dim


class _EvaluatorCache:
    """The evaluator a task resolves to (None if refused), cached per problem."""

    def __init__(self, config: SweepConfig) -> None:
        self.config, self.memo, self.targets = config, {}, {}

    def __call__(self, task: Task) -> str | None:
        problem = (task.target, task.sampler, task.options, task.perturbation, task.metric)
        if problem not in self.memo:
            if task.target not in self.targets:
                self.targets[task.target] = parse_target(task.target)
            target = self.targets[task.target]
            spec = REGISTRY[task.sampler]
            pert = (
                None if task.perturbation is None else parse_perturbation(task.perturbation, target)
            )
            denoised = spec.output_is_denoised(
                spec.resolve_options(dict(task.options)), self.config.denoise
            )
            try:
                self.memo[problem] = resolve_evaluator(
                    task.evaluator, target, spec, task.metric, perturbation=pert, denoised=denoised
                )
            except ValueError:
                self.memo[problem] = None
        return self.memo[problem]


# ---- entry points ----------------------------------------------------------------------------


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate the TOML sweep config at ``path``; ConfigError if missing or invalid."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), str(path), "no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), str(path), f"cannot read: {err}") from None
    return parse_config(text, path=str(path))


def parse_config(text: str, path: str = "<string>") -> SweepConfig:
    """Validate the TOML sweep config ``text``; ``path`` names it in errors and sets the default
    name (its stem)."""
    ctx = _Context(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        ctx.fail("<toml>", str(err))
    return _build(ctx, raw, text)


# ---- validation ------------------------------------------------------------------------------


class _Context:
    """The file being validated, for error messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, rule: str, value: Any = _NO_VALUE) -> NoReturn:
        raise ConfigError(self.path, key, rule, value)


Check = Callable[[_Context, str, Any], Any]


def _string(ctx: _Context, key: str, value: Any) -> str:
    if not isinstance(value, str):
        ctx.fail(key, "must be a string", value)
    return value


def _choice(allowed: Iterable[str]) -> Check:
    allowed = tuple(allowed)

    def check(ctx: _Context, key: str, value: Any) -> str:
        if _string(ctx, key, value) not in allowed:
            ctx.fail(key, f"must be one of {', '.join(allowed)}", value)
        return value

    return check


def _int(ctx: _Context, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        ctx.fail(key, "must be an integer", value)
    return value


def _integer(minimum: int) -> Check:
    def check(ctx: _Context, key: str, value: Any) -> int:
        if _int(ctx, key, value) < minimum:
            ctx.fail(key, f"must be >= {minimum}", value)
        return value

    return check


def _boolean(ctx: _Context, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        ctx.fail(key, "must be true or false", value)
    return value


def _number(ctx: _Context, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        ctx.fail(key, "must be a number", value)
    if math.isnan(value):
        ctx.fail(key, "must not be nan", value)
    return float(value)


def _unit_interval(ctx: _Context, key: str, value: Any) -> float:
    if not 0.0 < _number(ctx, key, value) < 1.0:
        ctx.fail(key, "must be in (0, 1)", value)
    return float(value)


def _nonempty_string(ctx: _Context, key: str, value: Any) -> str:
    if not _string(ctx, key, value).strip():
        ctx.fail(key, "must not be empty", value)
    return value


def _list_of(item: Check, what: str) -> Check:
    """A non-empty list whose items pass ``item`` and do not repeat."""

    def check(ctx: _Context, key: str, value: Any) -> tuple:
        if not isinstance(value, list):
            ctx.fail(key, f"must be a list of {what}", value)
        if not value:
            ctx.fail(key, "must be a non-empty list", value)
        items = tuple(item(ctx, f"{key}[{i}]", v) for i, v in enumerate(value))
        _no_repeats(ctx, key, items, value)
        return items

    return check


def _no_repeats(ctx: _Context, key: str, items: tuple, shown: list) -> None:
    first: dict = {}
    for i, v in enumerate(items):
        if v in first:
            ctx.fail(f"{key}[{i}]", f"repeats {key}[{first[v]}]", shown[i])
        first[v] = i


def _one_or_list(item: Check, what: str) -> Check:
    """A single value or a non-empty list of them; always returns a tuple."""
    many = _list_of(item, what)

    def check(ctx: _Context, key: str, value: Any) -> tuple:
        return many(ctx, key, value) if isinstance(value, list) else (item(ctx, key, value),)

    return check


def _steps(ctx: _Context, key: str, value: Any) -> tuple[int, ...]:
    """Positive step counts, strictly increasing."""
    if not isinstance(value, list):
        ctx.fail(key, "must be a list of integers", value)
    if not value:
        ctx.fail(key, "must be a non-empty list", value)
    items = tuple(_integer(1)(ctx, f"{key}[{i}]", v) for i, v in enumerate(value))
    for i in range(1, len(items)):
        if items[i] <= items[i - 1]:
            ctx.fail(f"{key}[{i}]", f"must be > {key}[{i - 1}] (strictly increasing)", items[i])
    return items


def _seeds(ctx: _Context, key: str, value: Any) -> tuple[int, ...]:
    """An int N >= 1 (seeds 0..N-1) or a list of distinct non-negative ints."""
    if isinstance(value, list):
        return _list_of(_integer(0), "integers")(ctx, key, value)
    if isinstance(value, bool) or not isinstance(value, int):
        ctx.fail(key, "must be an integer N (seeds 0..N-1) or a list of integers", value)
    return tuple(range(_integer(1)(ctx, key, value)))


def _table(ctx: _Context, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        ctx.fail(key, "must be a table", value)
    return value


def _known_keys(ctx: _Context, table: dict, allowed: Iterable[str], prefix: str = "") -> None:
    allowed = tuple(allowed)
    for k in table:
        if k not in allowed:
            ctx.fail(f"{prefix}{k}", f"unknown key; allowed: {', '.join(allowed)}")


_REQUIRED = object()
# key -> (check, default); name, dimensions, steps and samplers get cross-checks in _build
TOP_LEVEL: dict[str, tuple[Check, Any]] = {
    "name": (_nonempty_string, None),
    "process": (_one_or_list(_choice(PROCESSES), "strings"), "vp"),
    "targets": (_list_of(_string, "strings"), _REQUIRED),
    "dimensions": (_list_of(_integer(1), "integers"), None),
    "steps": (_steps, None),
    "metrics": (_list_of(_choice(METRICS), "strings"), _REQUIRED),
    "evaluator": (_choice(EVALUATORS), "auto"),
    "seeds": (_seeds, [0]),
    "n": (_integer(2), 2000),
    "perturbations": (_list_of(_string, "strings"), [NO_PERTURBATION]),
    "init": (_choice(INITS), "exact"),
    "t_end": (_unit_interval, None),
    "final_noise": (_boolean, False),
    "denoise": (_boolean, False),
    "noise": (_choice(NOISES), "independent"),
    "samplers": (None, _REQUIRED),
}
SAMPLER_KEYS = ("name", "options", "steps")


def _build(ctx: _Context, raw: dict, text: str) -> SweepConfig:
    _known_keys(ctx, raw, TOP_LEVEL)
    values: dict[str, Any] = {}
    for key, (check, default) in TOP_LEVEL.items():
        if key not in raw:
            if default is _REQUIRED:
                ctx.fail(key, "is required")
            values[key] = None if default is None else check(ctx, key, default)
        elif check is not None:
            values[key] = check(ctx, key, raw[key])
    grid_targets = _expand_targets(ctx, values["targets"], values["dimensions"])
    targets = {spec: parse_target(spec) for spec, _ in grid_targets}
    perturbations = _perturbations(ctx, values["perturbations"], targets)
    t_end = values["t_end"]
    samplers = _samplers(ctx, raw["samplers"], values["steps"], values["process"], t_end)
    default_name = "sweep" if ctx.path == "<string>" else Path(ctx.path).stem
    return SweepConfig(
        name=values["name"] or default_name,
        processes=values["process"],
        targets=values["targets"],
        dimensions=values["dimensions"] or (),
        grid_targets=grid_targets,
        samplers=samplers,
        metrics=values["metrics"],
        evaluator=values["evaluator"],
        seeds=values["seeds"],
        n=values["n"],
        perturbations=perturbations,
        init=values["init"],
        t_end=t_end,
        final_noise=values["final_noise"],
        denoise=values["denoise"],
        noise=values["noise"],
        source=text,
        path=ctx.path,
    )


def _expand_targets(
    ctx: _Context, targets: tuple[str, ...], dimensions: tuple[int, ...] | None
) -> tuple[tuple[str, int], ...]:
    """(spec, dim) for every target, "{d}" replaced by each dimension; each spec must parse."""
    templated = [i for i, t in enumerate(targets) if DIM_FIELD in t]
    if templated and dimensions is None:
        ctx.fail("dimensions", f'is required because targets[{templated[0]}] contains "{{d}}"')
    if dimensions is not None and not templated:
        ctx.fail("dimensions", 'is given but no target contains "{d}"', list(dimensions))
    out, where = [], []
    for i, template in enumerate(targets):
        ds = dimensions if i in templated else (None,)
        for d in ds:
            spec = template if d is None else template.replace(DIM_FIELD, str(d))
            try:
                target = parse_target(spec)
            except ValueError as err:
                ctx.fail(f"targets[{i}]", str(err))
            out.append((spec, target.dim))
            where.append(i)
    specs = [s for s, _ in out]
    for j, spec in enumerate(specs):
        if specs.index(spec) != j:
            i, first = where[j], where[specs.index(spec)]
            ctx.fail(f"targets[{i}]", f"repeats targets[{first}] (as {spec!r})", targets[i])
    return tuple(out)


def _perturbations(ctx: _Context, specs: tuple[str, ...], targets: dict) -> tuple[str | None, ...]:
    """ "none" -> None; every other spec must build a perturbation for every target."""
    for i, spec in enumerate(specs):
        if spec == NO_PERTURBATION:
            continue
        for name, target in targets.items():
            try:
                parse_perturbation(spec, target)
            except (ValueError, RuntimeError) as err:
                ctx.fail(f"perturbations[{i}]", f"{err} (target {name!r})")
    return tuple(None if s == NO_PERTURBATION else s for s in specs)


def _samplers(
    ctx: _Context,
    raw: Any,
    steps: tuple[int, ...] | None,
    processes: tuple[str, ...],
    t_end: float | None,
) -> tuple[SamplerEntry, ...]:
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        ctx.fail("samplers", "must be a list of tables ([[samplers]])", raw)
    if not raw:
        ctx.fail("samplers", "must be a non-empty list", raw)
    entries = tuple(
        _sampler(ctx, f"samplers[{i}]", e, steps, processes, t_end) for i, e in enumerate(raw)
    )
    seen: dict[tuple, list[int]] = {}
    for i, e in enumerate(entries):
        same = (e.name, tuple(sorted(get_spec(e.name).resolve_options(dict(e.options)).items())))
        for j in seen.get(same, []):
            common = sorted(set(e.steps) & set(entries[j].steps))
            if common:
                rule = f"repeats samplers[{j}] (same sampler and options) at steps {common}"
                ctx.fail(f"samplers[{i}]", rule, e.name)
        seen.setdefault(same, []).append(i)
    return entries


def _sampler(
    ctx: _Context,
    key: str,
    raw: dict,
    default_steps: tuple[int, ...] | None,
    processes: tuple[str, ...],
    t_end: float | None,
) -> SamplerEntry:
    _known_keys(ctx, raw, SAMPLER_KEYS, f"{key}.")
    if "name" not in raw:
        ctx.fail(f"{key}.name", "is required")
    name = _string(ctx, f"{key}.name", raw["name"])
    try:
        spec = get_spec(name)
    except ValueError as err:
        ctx.fail(f"{key}.name", str(err))
    for p in processes:
        if p not in spec.processes:
            supported = ", ".join(spec.processes)
            ctx.fail(
                f"{key}.name", f"sampler {name!r} does not support process {p!r} ({supported})"
            )
    options = _options(
        ctx, f"{key}.options", spec, _table(ctx, f"{key}.options", raw.get("options", {}))
    )
    if "steps" in raw:
        steps = _steps(ctx, f"{key}.steps", raw["steps"])
    elif default_steps is None:
        ctx.fail("steps", f"is required (or give steps in every [[samplers]]; {key} has none)")
    else:
        steps = default_steps
    _run_spec_validate(ctx, f"{key}.options", spec, options, steps, processes, t_end)
    return SamplerEntry(name, options, steps)


def _options(
    ctx: _Context, key: str, spec: SamplerSpec, raw: dict
) -> tuple[tuple[str, object], ...]:
    """Each option: known and an allowed choice (resolve_options), its default's type, > 0 where
    the default is a positive number."""
    out = {}
    for opt, value in raw.items():
        where = f"{key}.{opt}"
        try:
            spec.resolve_options({opt: value})
        except ValueError as err:
            ctx.fail(where, str(err))
        out[opt] = _option_value(ctx, where, spec.options[opt], value)
    return tuple(sorted(out.items()))


def _option_value(ctx: _Context, key: str, default: Any, value: Any) -> Any:
    """``value`` checked against the type of ``default`` (float options accept ints)."""
    if isinstance(default, bool):
        return _boolean(ctx, key, value)
    if isinstance(default, str):
        return _string(ctx, key, value)
    value = (_int if isinstance(default, int) else _number)(ctx, key, value)  # None: a number
    if isinstance(default, int | float) and default > 0 and not value > 0:
        ctx.fail(key, "must be > 0", value)
    return value


def _run_spec_validate(
    ctx: _Context,
    key: str,
    spec: SamplerSpec,
    options: tuple,
    steps: tuple[int, ...],
    processes: tuple[str, ...],
    t_end: float | None,
) -> None:
    """The sampler's own check of its options, for every process and step count."""
    if spec.validate is None:
        return
    resolved = spec.resolve_options(dict(options))
    for p, s in itertools.product(processes, steps):
        process = make_process(p)
        try:
            spec.validate(process, s, check_t_end(process, t_end), resolved)
        except ValueError as err:
            ctx.fail(key, f"{err} (process {p}, steps {s})")
