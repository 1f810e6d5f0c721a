"""The ``convergence`` command.

    convergence samplers [--json]
    convergence targets [--json]
    convergence rate [--sampler NAME] [--target SPEC] [--process vp|ve] [--metric NAME]
                     [--steps 20,40,...] [--evaluator auto|gaussian|grid|tensor|logdet|coupled|
                     samples] [--perturb SPEC] [--json]
    convergence sweep CONFIG.toml [--out RESULTS.sqlite] [--executor local|dask] [--workers N]
                      [--scheduler ADDRESS] [--dry-run] [--json] [--retry-failed] [--no-progress]
    convergence export RESULTS.sqlite --csv FILE
    convergence fit RESULTS.sqlite [--level X] [--json] [--markdown FILE] [--latex FILE]
    convergence figure RESULTS.sqlite --out DIR
    convergence train --target SPEC --process vp|ve --steps N --out CKPT [--batch N] [--lr X]
                      [--width N] [--blocks N] [--predict eps|score] [--seed N]
                      [--device auto|cpu|cuda] [--resume CKPT] [--no-progress]

Exit codes: 0 success, 2 bad usage or invalid input (one line on stderr), 1 a failed run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from itertools import pairwise

from analytic.processes import PROCESSES, make_process
from convergence.evaluators import EVALUATORS, INITS, METRICS, NOISES
from convergence.experiment import measure_rate
from convergence.rates import local_slopes
from convergence.samplers import REGISTRY, DivergenceError, get_spec
from convergence.scores import PERTURBATIONS, parse_perturbation, score_error_on_schedule
from convergence.targets import TARGETS, parse_target

DEFAULT_STEPS = "20,40,80,160,320,640,1280"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        raise UsageError(message)


def _steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--steps must be comma-separated integers, got {text!r}"
        ) from None
    if len(steps) < 2 or steps[0] < 1 or any(b <= a for a, b in pairwise(steps)):
        raise argparse.ArgumentTypeError(
            f"--steps needs at least two strictly increasing integers >= 1, got {text!r}"
        )
    return steps


def _option(text: str) -> tuple[str, object]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"--option takes KEY=VALUE, got {text!r}")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convergence", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("samplers", help="list the registered samplers")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("targets", help="list the target spec strings")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("rate", help="measure the convergence rate of one sampler")
    p.add_argument("--sampler", default="ddim", choices=list(REGISTRY))
    p.add_argument("--target", default="gaussian:d=2", help="e.g. gaussian:d=2, gmm:d=2,k=3,seed=0")
    p.add_argument("--process", default="vp", choices=list(PROCESSES))
    p.add_argument("--metric", default="kl", choices=list(METRICS))
    p.add_argument("--steps", type=_steps, default=_steps(DEFAULT_STEPS))
    p.add_argument("--evaluator", default="auto", choices=list(EVALUATORS))
    p.add_argument(
        "--n", type=int, default=2000, help="samples / trajectories per point (Monte Carlo)"
    )
    p.add_argument(
        "--perturb",
        default=None,
        metavar="SPEC",
        help="score error field, e.g. sin:eps=0.01,omega=4 or bias:eps=0.01 "
        "(kinds: " + ", ".join(PERTURBATIONS) + ")",
    )
    p.add_argument(
        "--score",
        default="exact",
        metavar="SOURCE",
        help="exact (default) or learned:CKPT, a network of `convergence train` (its error "
        "against the exact score is reported like a perturbation's)",
    )
    p.add_argument(
        "--evaluator-option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="evaluator option, e.g. ref_factor=32 (coupled) or n_directions=500 (sliced-w2)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--t-end", type=float, default=None, help="end time (default: the process's)")
    p.add_argument("--init", default="exact", choices=list(INITS))
    p.add_argument(
        "--noise",
        default="independent",
        choices=list(NOISES),
        help="brownian: runs with T and 2T steps share one Brownian path",
    )
    p.add_argument(
        "--denoise",
        action="store_true",
        help="final Tweedie denoise (the reference becomes its exact push-forward)",
    )
    p.add_argument(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sampler option, e.g. variance=beta_tilde for ddpm",
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("sweep", help="run a sweep config (TOML) into a results store")
    p.add_argument("config", help="the sweep's TOML file")
    p.add_argument("--out", default=None, help="results store (default: CONFIG with .sqlite)")
    p.add_argument("--executor", default="local", choices=["local", "dask"])
    p.add_argument("--workers", type=int, default=None, help="local workers (default: cores)")
    p.add_argument("--scheduler", default=None, help="dask scheduler address, e.g. tcp://h:8786")
    p.add_argument("--dry-run", action="store_true", help="count the tasks and estimate the cost")
    p.add_argument("--retry-failed", action="store_true", help="re-run tasks recorded as failed")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", help="export a results store to CSV")
    p.add_argument("results")
    p.add_argument("--csv", required=True, metavar="FILE")

    p = sub.add_parser("fit", help="fit rates, verdicts and NFE-to-error speed-ups of a store")
    p.add_argument("results")
    p.add_argument("--level", type=float, default=None, help="error level for NFE-to-error")
    p.add_argument("--json", action="store_true")
    p.add_argument("--markdown", default=None, metavar="FILE")
    p.add_argument("--latex", default=None, metavar="FILE")

    p = sub.add_parser("figure", help="error vs T and vs NFE plots of a store (PDF + PNG)")
    p.add_argument("results")
    p.add_argument("--out", required=True, metavar="DIR")

    p = sub.add_parser("claims", help="the seed papers' claims with their last verdict")
    p.add_argument("--out", default="reports", metavar="DIR", help="report folder to read")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="run, judge and write the claims report (REPORT.md)")
    p.add_argument("--quick", action="store_true", help="reduced runs (CI): under 2 minutes")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="default: reports/ (reports/quick/ with --quick)"
    )
    p.add_argument("--configs", default=None, metavar="DIR", help="default: reports/configs/")
    p.add_argument("--claim", action="append", default=None, help="only this claim (id or number)")
    p.add_argument("--workers", type=int, default=None, help="local workers (default: cores)")
    p.add_argument("--no-progress", action="store_true")

    from convergence.learned import NetworkConfig, TrainConfig

    p = sub.add_parser("train", help="train a score network by denoising score matching")
    p.add_argument("--target", required=True, help="e.g. product:d=16,k=3,seed=0")
    p.add_argument("--process", default="vp", choices=list(PROCESSES))
    p.add_argument("--steps", type=int, required=True, help="total optimiser steps")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint (+ CKPT.json)")
    p.add_argument("--batch", type=int, help=f"samples per step (default {TrainConfig.batch})")
    p.add_argument("--lr", type=float, help=f"Adam learning rate (default {TrainConfig.lr:g})")
    p.add_argument("--width", type=int, help=f"hidden width (default {NetworkConfig.width})")
    p.add_argument("--blocks", type=int, help=f"residual blocks (default {NetworkConfig.blocks})")
    p.add_argument("--predict", choices=["eps", "score"], help=f"default {NetworkConfig.predict}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda[:N]")
    p.add_argument("--resume", default=None, metavar="CKPT", help="continue this checkpoint")
    p.add_argument("--no-progress", action="store_true")
    return parser


def _fmt(x: float | None, spec: str = ".3e") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def cmd_samplers(args) -> int:
    specs = list(REGISTRY.values())
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "family": s.family,
                        "stochastic": s.stochastic,
                        "nfe_per_step": s.nfe_per_step,
                        "expected_order": s.expected_order,
                        "claims": [
                            {"metric": c.metric, "exponent": c.exponent, "source": c.source}
                            for c in s.claims
                        ],
                        "citation": s.citation,
                    }
                    for s in specs
                ],
                indent=2,
            )
        )
        return 0
    rows = [
        (
            s.name,
            s.family,
            "yes" if s.stochastic else "no",
            str(s.nfe_per_step),
            _fmt(s.expected_order, "g"),
            "; ".join(_claim_text(c) for c in s.claims) or "-",
        )
        for s in specs
    ]
    header = ("name", "family", "stochastic", "NFE/step", "order", "claimed")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5])
    return 0


RATE_METRICS = ("tv", "kl", "w2", "hellinger", "weak")


def _claim_text(claim) -> str:
    """A rate in the step count as 'metric T^-p'; any other claim (an empirical speed-up, a
    bias in the step size h) by its source text."""
    if claim.metric in RATE_METRICS:
        return f"{claim.metric} T^-{claim.exponent:g}"
    return claim.source


def cmd_targets(args) -> int:
    rows = [
        {"name": name, "parameters": list(types), "description": desc}
        for name, (_, types, desc) in TARGETS.items()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']}:{','.join(p + '=...' for p in r['parameters'])}  {r['description']}")
    print("examples: gaussian:d=2   gmm:d=2,k=3,seed=0   gmm:d=8,k=4,seed=1,cov=diag")
    return 0


def _progress(i: int, total: int, point) -> None:
    print(f"\r[{i}/{total}] T={point.steps} error={point.value:.3e}", end="", file=sys.stderr)


def cmd_rate(args) -> int:
    target = parse_target(args.target)
    process = make_process(args.process)
    if args.score != "exact" and not args.score.startswith("learned:"):
        raise ValueError(f"--score must be exact or learned:CKPT, got {args.score!r}")
    if args.score != "exact" and args.perturb is not None:
        raise ValueError("--score learned:CKPT and --perturb are exclusive: give one score")
    spec = args.perturb if args.score == "exact" else args.score
    perturbation = None if spec is None else parse_perturbation(spec, target)
    show = not args.json and sys.stderr.isatty()
    res = measure_rate(
        args.sampler,
        target,
        process,
        args.steps,
        metric=args.metric,
        evaluator=args.evaluator,
        n=args.n,
        seed=args.seed,
        t_end=args.t_end,
        init=args.init,
        noise=args.noise,
        denoise=args.denoise,
        perturbation=perturbation,
        evaluator_options=dict(args.evaluator_option),
        progress=_progress if show else None,
        **dict(args.option),
    )
    if show:
        print(file=sys.stderr)
    fit = res.fit
    evaluator = res.points[0].evaluator
    notes = sorted({p.note for p in res.points if p.note})
    out = {
        "sampler": args.sampler,
        "target": args.target,
        "process": args.process,
        "metric": args.metric,
        "evaluator": evaluator,
        "points": [
            {"steps": p.steps, "nfe": p.nfe, "error": p.value, "uncertainty": p.uncertainty}
            | ({"lower_bound": p.lower_bound} if p.lower_bound is not None else {})
            for p in res.points
        ],
        "fit": None
        if fit is None
        else {
            "slope": fit.slope,
            "ci_low": fit.ci_low,
            "ci_high": fit.ci_high,
            "window": list(fit.window),
            "settled": fit.settled,
            "local_slopes": list(fit.local_slopes),
        },
        "expected_slope": res.expected_slope,
        "verdict": res.verdict,
        "t_end": res.points[0].t_end,
        "notes": notes + ([res.unresolved] if res.unresolved else []),
    }
    if perturbation is not None:
        size = _perturbation_size(perturbation, target, process, args)
        out["perturbation"] = {"spec": perturbation.spec} | size
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"{args.sampler} on {args.target} ({args.process}), {args.metric} by the "
        f"{evaluator} evaluator, reference: {res.points[0].reference}"
    )
    if perturbation is not None:
        ps = out["perturbation"]
        print(
            f"score perturbation {ps['spec']}: eps_score {ps['eps_score']:.3e}, eps_jacobi "
            f"{ps['eps_jacobi']:.3e} ({ps['method']}, over the {ps['grid']})"
        )
    print(f"{'steps':>7} {'nfe':>7} {'error':>11} {'uncertainty':>11} {'local slope':>11}")
    slopes = local_slopes(args.steps, [p.value for p in res.points])
    for p, s in zip(res.points, [None, *slopes], strict=True):
        print(
            f"{p.steps:>7} {p.nfe:>7} {_fmt(p.value):>11} {_fmt(p.uncertainty):>11} "
            f"{_fmt(s, '+.3f'):>11}"
        )
    if fit is not None:
        lo, hi = fit.window
        print(
            f"fitted slope {fit.slope:+.3f} [{fit.ci_low:+.3f}, {fit.ci_high:+.3f}] (95% CI) "
            f"over T in [{lo}, {hi}]{'' if fit.settled else ' (local slopes not settled)'}"
        )
    print(f"expected slope {_fmt(res.expected_slope, '+.2f')}: {res.verdict}")
    for note in out["notes"]:
        print(f"note: {note}")
    return 0


def _perturbation_size(perturbation, target, process, args) -> dict:
    """eps_score and eps_jacobi of a perturbation over the score times of the largest run."""
    err, grid = score_error_on_schedule(
        target,
        process,
        perturbation,
        args.sampler,
        max(args.steps),
        t_end=args.t_end,
        options=dict(args.option),
        seed=args.seed,
    )
    return {
        "eps_score": err.eps_score,
        "eps_score_ci": err.eps_score_ci,
        "eps_jacobi": err.eps_jacobi,
        "eps_jacobi_ci": err.eps_jacobi_ci,
        "method": err.method,
        "grid": grid,
    }


def cmd_sweep(args) -> int:
    from pathlib import Path

    from convergence.sweep.config import load_config
    from convergence.sweep.runner import run_sweep

    config = load_config(args.config)
    out = Path(args.out) if args.out else Path(args.config).with_suffix(".sqlite")
    if args.dry_run:
        cost = config.estimate_cost()
        if args.json:
            print(json.dumps({**cost, "store": str(out)}, indent=2))
        else:
            print(f"{cost['tasks']} tasks; estimated cost: {_describe_cost(cost)}; store {out}")
        return 0
    summary = run_sweep(
        config,
        out,
        executor=args.executor,
        workers=args.workers,
        scheduler=args.scheduler,
        progress=not args.no_progress,
        retry_failed=args.retry_failed,
    )
    if args.json:
        print(json.dumps({**summary.__dict__, "recorded": summary.recorded}, indent=2))
    else:
        print(
            f"{summary.recorded} tasks run ({summary.ok} ok, {summary.diverged} diverged, "
            f"{summary.failed} failed), {summary.skipped} already in {summary.store}; "
            f"{summary.wall:.1f} s" + ("; interrupted" if summary.interrupted else "")
        )
    return 130 if summary.interrupted else 0


def _describe_cost(cost: dict) -> str:
    """cost units (score evaluations x points pushed) and tasks per evaluator."""
    parts = [f"{cost['cost']:.3g} point-evaluations"] if "cost" in cost else []
    by = cost.get("by_evaluator") or {}
    if by:
        parts.append("by evaluator: " + ", ".join(f"{k} {v}" for k, v in sorted(by.items())))
    if cost.get("refused"):
        parts.append(f"{cost['refused']} refused by their evaluator")
    return "; ".join(parts) or "n/a"


def _open_results(path: str):
    from pathlib import Path

    from convergence.sweep.store import Store

    if not Path(path).is_file():
        raise ValueError(f"{path}: no such results store")
    return Store(path)


def cmd_export(args) -> int:
    from convergence.sweep.store import export_csv

    _open_results(args.results).close()
    rows = export_csv(args.results, args.csv)
    print(f"{rows} rows written to {args.csv}")
    return 0


def cmd_fit(args) -> int:
    from convergence.analysis import analyse
    from convergence.tables import to_json, to_latex, to_markdown

    with _open_results(args.results) as store:
        records = store.records()
    result = analyse(records, level=args.level)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(to_markdown(result))
    if args.latex:
        with open(args.latex, "w") as fh:
            fh.write(to_latex(result))
    print(json.dumps(to_json(result), indent=2) if args.json else to_markdown(result))
    return 0


def cmd_figure(args) -> int:
    from convergence.analysis import analyse
    from convergence.figures import plot_curves

    with _open_results(args.results) as store:
        records = store.records()
    paths = plot_curves(analyse(records), args.out)
    for path in paths:
        print(path)
    return 0


def cmd_claims(args) -> int:
    from convergence.claims.report import last_verdicts

    rows = last_verdicts(args.out)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['number']}. {r['id']:<17} {r['title']}")
        print(f"   {r['paper']}")
        print(f"   status: {r['status']}")
        print(f"   verdict: {r['verdict']}")
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from convergence.claims import CLAIMS, get_claim
    from convergence.claims.report import build_report

    claims = [get_claim(c) for c in args.claim] if args.claim else list(CLAIMS)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.configs is not None and not Path(args.configs).is_dir():
        raise ValueError(f"--configs {args.configs}: no such folder")
    out = args.out or ("reports/quick" if args.quick else "reports")
    try:
        results = build_report(
            out,
            quick=args.quick,
            claims=claims,
            configs=args.configs,
            workers=args.workers,
            progress=not args.no_progress,
            log=lambda line: print(line, file=sys.stderr),
        )
    except KeyboardInterrupt:
        print("convergence: interrupted; finished tasks are stored", file=sys.stderr)
        return 130
    for r in results:
        print(f"{r.claim.number}. {r.claim.id}: {r.status.value if r.findings else 'pending'}")
    print(f"report written to {Path(out) / 'REPORT.md'}")
    return 0


def cmd_train(args) -> int:
    from dataclasses import replace

    from convergence.learned import NetworkConfig, TrainConfig, resolve_device, train
    from convergence.learned.checkpoint import sidecar_path

    device = resolve_device(args.device)
    given = {k: getattr(args, k) for k in ("batch", "lr") if getattr(args, k) is not None}
    config = TrainConfig(args.target, args.process, args.steps, seed=args.seed, **given)
    sizes = {k: getattr(args, k) for k in ("width", "blocks", "predict")}
    sizes = {k: v for k, v in sizes.items() if v is not None}
    network = None
    if sizes or args.resume is None:
        network = replace(NetworkConfig(parse_target(args.target).dim, args.process), **sizes)
    print(f"device: {device}", flush=True)
    _, history = train(
        config,
        network,
        device=device,
        resume=args.resume,
        checkpoint=args.out,
        checkpoint_every=max(1, args.steps // 10),
        progress=not args.no_progress,
    )
    tail = [loss for _, loss in history[-50:]]
    print(
        f"trained to step {history[-1][0]}; final loss {sum(tail) / len(tail):.4e} "
        f"(mean of the last {len(tail)} steps)"
    )
    print(f"wrote {args.out}")
    print(f"wrote {sidecar_path(args.out)}")
    return 0


COMMANDS = {
    "claims": cmd_claims,
    "report": cmd_report,
    "samplers": cmd_samplers,
    "targets": cmd_targets,
    "rate": cmd_rate,
    "sweep": cmd_sweep,
    "export": cmd_export,
    "fit": cmd_fit,
    "figure": cmd_figure,
    "train": cmd_train,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "rate":
            get_spec(args.sampler)
        return COMMANDS[args.command](args)
    except (UsageError, ValueError, argparse.ArgumentTypeError) as exc:
        print(f"convergence: error: {exc}", file=sys.stderr)
        return 2
    except DivergenceError as exc:
        print(f"convergence: run failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
