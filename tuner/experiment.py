"""The command line shared by every script in `experiments/`.

A script declares its experiment (an `ExperimentConfig`, a `SearchSpace` and what smoke mode
shrinks) and hands them to `main`, which reads the common flags, runs the search and prints the
best trial.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray import tune

from tuner.config import METRIC, ExperimentConfig, load_experiment_config
from tuner.guard import StorageError
from tuner.search import run_search
from tuner.space import SearchSpace

__all__ = ["main", "parse_experiment"]

# What --smoke-test shrinks unless a script says otherwise: a run of seconds, not minutes.
SMOKE = {
    "num_samples": 4,
    "steps_per_iteration": 2,
    "max_iterations": 2,
    "grace_period": 1,
    "n_startup_trials": 2,
    "val_size": 64,
    "picture_every": 1,
}


def _parser(description: str, defaults: ExperimentConfig) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    add = parser.add_argument
    add("--name", default=defaults.name, help=f"experiment name (default: {defaults.name})")
    add(
        "--storage-path",
        default=defaults.storage_path,
        help=f"results root, a path or URI (default: {defaults.storage_path})",
    )
    add(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster to join, e.g. auto or ray://head:10001 (default: $RAY_ADDRESS, "
        "else an embedded local Ray)",
    )
    add("--num-samples", type=int, default=defaults.num_samples, help="trials to run")
    add("--max-concurrent", type=int, default=defaults.max_concurrent, help="trials at once")
    add("--cpus-per-trial", type=float, default=defaults.cpus_per_trial)
    add(
        "--gpus-per-trial",
        type=float,
        default=defaults.gpus_per_trial,
        help="0, a fraction (0.25 packs four trials on a GPU) or a whole number",
    )
    add("--time-budget", type=float, default=defaults.time_budget_s, help="seconds, whole search")
    add("--seed", type=int, default=defaults.seed, help="sampler, weights and data seed")
    add("--steps-per-iteration", type=int, default=defaults.steps_per_iteration)
    add("--max-iterations", type=int, default=defaults.max_iterations)
    add("--sampler", choices=["tpe", "random"], default=defaults.sampler, help="Optuna sampler")
    add(
        "--no-early-stopping",
        dest="early_stopping",
        action="store_false",
        default=defaults.early_stopping,
        help="train every trial for --max-iterations (no successive halving)",
    )
    add(
        "--autoscaling",
        action="store_true",
        help="the cluster adds nodes on demand: do not require a node that fits a trial now",
    )
    add("--resume", action="store_true", help="continue the experiment --name")
    add("--smoke-test", action="store_true", help="a tiny run of the same script, for tests")
    return parser


def parse_experiment(
    description: str,
    defaults: ExperimentConfig,
    smoke: dict[str, Any] | None = None,
    argv: Sequence[str] | None = None,
) -> tuple[ExperimentConfig, argparse.Namespace]:
    """Apply the command line to `defaults`; exits with one message on a bad value."""
    parser = _parser(description, defaults)
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.smoke_test:
        overrides.update(SMOKE if smoke is None else smoke)
    # Flags given explicitly win over smoke mode.
    for flag, field in (
        ("name", "name"),
        ("storage_path", "storage_path"),
        ("num_samples", "num_samples"),
        ("max_concurrent", "max_concurrent"),
        ("cpus_per_trial", "cpus_per_trial"),
        ("gpus_per_trial", "gpus_per_trial"),
        ("time_budget", "time_budget_s"),
        ("seed", "seed"),
        ("steps_per_iteration", "steps_per_iteration"),
        ("max_iterations", "max_iterations"),
        ("autoscaling", "autoscaling"),
        ("sampler", "sampler"),
        ("early_stopping", "early_stopping"),
    ):
        value = getattr(args, flag)
        if value != parser.get_default(flag) or field not in overrides:
            overrides[field] = value
    if overrides.get("grace_period", defaults.grace_period) > overrides["max_iterations"]:
        overrides["grace_period"] = overrides["max_iterations"]
    try:
        experiment = dataclasses.replace(defaults, **overrides)
    except ValueError as error:
        parser.error(str(error))
    return experiment, args


def main(
    description: str,
    defaults: ExperimentConfig,
    space: SearchSpace,
    smoke: dict[str, Any] | None = None,
    argv: Sequence[str] | None = None,
) -> tune.ResultGrid:
    """Run an experiment script: flags, search, then a summary of the best trial."""
    experiment, args = parse_experiment(description, defaults, smoke, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.resume:
        path = Path(experiment.experiment_path)
        if (path / "circletune.json").exists():
            # The saved experiment is continued as it was started.
            experiment = load_experiment_config(path)
    try:
        results = run_search(experiment, space, address=args.address, resume=args.resume)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except StorageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print_summary(results, experiment)
    return results


def print_summary(results: tune.ResultGrid, experiment: ExperimentConfig) -> None:
    errors = sum(1 for r in results if r.error is not None)
    print(f"\n{len(results)} trials, {errors} errored; experiment: {experiment.experiment_path}")
    best = results.get_best_result(metric=METRIC, mode="min", scope="last")
    if best.metrics is None:
        print("no trial reported a result")
        return
    params = {k: v for k, v in best.config.items() if k != "settings"}
    shown = ("val_rmse", "val_rmse_x", "val_rmse_y", "val_rmse_r", "val_iou", "val_iou90")
    print(f"best trial {best.metrics['trial_id']}:")
    print(f"  config      {json.dumps(params, sort_keys=True)}")
    print("  metrics     " + "  ".join(f"{k} {best.metrics[k]:.3f}" for k in shown))
    print(f"  iterations  {best.metrics['training_iteration']}")
    print(f"  checkpoint  {best.checkpoint.path if best.checkpoint else 'none'}")
    print(f"tensorboard --logdir {experiment.experiment_path}")
