"""Sweeps: TOML configs expanded into tasks, a durable results store, execution and analysis.

``load_config`` (``config``), ``run_sweep`` (``runner``), ``Store`` / ``load_results`` /
``export_csv`` (``store``); the analysis of a store's records is ``convergence.analysis``.
"""

from convergence.sweep.config import ConfigError, SweepConfig, Task, load_config, parse_config
from convergence.sweep.runner import run_sweep, run_task
from convergence.sweep.store import Outcome, Store, export_csv, load_results

__all__ = [
    "ConfigError",
    "Outcome",
    "Store",
    "SweepConfig",
    "Task",
    "export_csv",
    "load_config",
    "load_results",
    "parse_config",
    "run_sweep",
    "run_task",
]
