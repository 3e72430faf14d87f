"""Does the search reach a good model with less compute than simpler ways of spending it?

    python benchmarks/search_efficiency.py             # 320 steps a run: about 30 minutes
    python benchmarks/search_efficiency.py --scale 3   # 960 steps: about 80 minutes on 2 CPU
                                                       # cores; the published figures come
                                                       # from --scale 3 and --scale 6
    python benchmarks/search_efficiency.py --smoke     # seconds; what the tests run

Compute is counted in optimiser steps, summed over every trial of a run, so the figures do not
depend on the machine's speed. Each strategy gets the same step budget per run, on the same
search space, with the same number of concurrent trials, over several seeds:

- tpe_asha: Optuna's TPE sampler with ASHA early stopping (circletune's default);
- random_asha: random sampling with ASHA;
- random_full: random sampling, every trial trained to the end;
- seed_alone: the seed network with the seed's settings, trained alone for the whole budget
  (with `models.train`'s Trainer, outside Ray: one run needs no search; every seed at
  once, a process and a thread each, so that no core idles while the last seed trains).

Reported per strategy: the steps it needed before any trial reached the target val_rmse, and
the best val_rmse at the end of the budget, as median and range over seeds. Goal: tpe_asha
reaches the target with at most half the steps of random_full.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import runpy
import statistics
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune

from tuner import SEED_PARAMS, ExperimentConfig, build_tuner
from tuner.trainable import SETTINGS

ROOT = Path(__file__).resolve().parents[1]

# The quickstart's space: small networks around the seed's own settings.
SPACE = runpy.run_path(str(ROOT / "experiments" / "quickstart.py"), run_name="space")["SPACE"]

STRATEGIES = ("tpe_asha", "random_asha", "random_full", "seed_alone")


class StepBudget(tune.Stopper):
    """Ends a run once its trials have taken `budget` optimiser steps between them.

    It also records, result by result, the steps spent so far and the best val_rmse so far.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.spent = 0
        self.curve: list[tuple[int, float]] = []  # (steps spent, best val_rmse so far)
        self._last_step: dict[str, int] = {}
        self.trials: dict[str, dict[str, Any]] = {}  # trial id -> steps, last val_rmse, params

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        step = int(result["step"])
        self.spent += step - self._last_step.get(trial_id, 0)
        self._last_step[trial_id] = step
        best = min(result["val_rmse"], self.curve[-1][1] if self.curve else float("inf"))
        self.curve.append((self.spent, best))
        params = {k: v for k, v in result.get("config", {}).items() if k != SETTINGS}
        self.trials[trial_id] = {"steps": step, "val_rmse": result["val_rmse"], **params}
        return False

    def stop_all(self) -> bool:
        return self.spent >= self.budget

    def steps_to(self, target: float) -> int | None:
        return next((spent for spent, best in self.curve if best <= target), None)

    def best_within_budget(self) -> float:
        within = [best for spent, best in self.curve if spent <= self.budget]
        return within[-1] if within else float("nan")


def train_seed_alone(seed: int, base: ExperimentConfig, budget: int) -> StepBudget:
    """The seed network for `budget` steps, scored every `steps_per_iteration` steps."""
    import torch

    from models import Trainer
    from tuner import configs_from_params

    torch.set_num_threads(1)
    model, train = configs_from_params(SEED_PARAMS, **base.train_options())
    trainer = Trainer(model, train, base.circles, "cpu", seed=seed)
    curve = StepBudget(budget)
    while trainer.step < budget:
        trainer.train_steps(min(base.steps_per_iteration, budget - trainer.step))
        curve("seed", {"step": trainer.step, **trainer.evaluate()})
    return curve


def run_strategy(
    strategy: str, seed: int, base: ExperimentConfig, budget: int, storage: str
) -> StepBudget:
    options: dict[str, Any] = {"seed": seed, "name": f"{strategy}_{seed}", "storage_path": storage}
    if strategy == "tpe_asha":
        options.update(sampler="tpe", early_stopping=True)
    elif strategy == "random_asha":
        options.update(sampler="random", early_stopping=True)
    elif strategy == "random_full":
        options.update(sampler="random", early_stopping=False)
    experiment = dataclasses.replace(base, **options)
    stopper = StepBudget(budget)
    build_tuner(experiment, SPACE, stop=stopper).fit()
    return stopper


def summarise(values: list[float | None]) -> dict[str, Any]:
    """Median and range; `None` (target not reached within the budget) ranks above any number."""
    reached = sorted(v for v in values if v is not None)
    median = statistics.median(reached + [math.inf] * (len(values) - len(reached)))
    return {
        "values": values,
        "reached": len(reached),
        "median": median if math.isfinite(median) else None,
        "min": reached[0] if reached else None,
        "max": reached[-1] if reached else None,
    }


def compare(strategies: dict[str, Any], budget: int) -> tuple[float | None, bool]:
    """tpe_asha's median steps to target over random_full's, and whether it is an upper bound.

    `strategies` is the report's per-strategy summary; without both strategies there is no
    ratio. A median of None means most runs did not reach the target within the budget: for
    random_full its steps are then above the budget, and the ratio below tpe / budget.
    """
    if "tpe_asha" not in strategies or "random_full" not in strategies:
        return None, False
    tpe = strategies["tpe_asha"]["steps_to_target"]["median"]
    full = strategies["random_full"]["steps_to_target"]["median"]
    if tpe is None:
        return None, False
    if full is None:
        return tpe / budget, True
    return tpe / full, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="runs per strategy (default 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first run")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the step budget")
    parser.add_argument("--target", type=float, default=4.0, help="val_rmse to reach, pixels")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=STRATEGIES)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the tests")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.seeds < 1 or args.first_seed < 0 or args.scale <= 0:
        parser.error("--seeds must be >= 1, --first-seed >= 0 and --scale > 0")

    # A full trial is 8 x 20 = 160 steps. The default budget, 320 steps, is two full trainings
    # and takes about 30 minutes on 2 CPU cores (13 of them the seed network alone, whose step
    # costs about 1.2 s there), too few for any search to reach 4.0 px; at --scale 3 it is six,
    # enough for random_full to try several networks and for successive halving to have
    # something to cut: a run then holds 12 or 13 trials and TPE models from the 5th on.
    # Halving decides after 40 and 80 steps (after 20, most of the ranking is noise).
    base = ExperimentConfig(
        num_samples=1000,  # the step budget ends every run first
        max_concurrent=2,
        cpus_per_trial=1,
        steps_per_iteration=4 if args.smoke else 20,
        max_iterations=2 if args.smoke else 8,
        grace_period=1 if args.smoke else 2,
        reduction_factor=2,
        n_startup_trials=2 if args.smoke else 4,
        val_size=32 if args.smoke else 256,
        max_failures=0,
        checkpoint_every=4,
        picture_every=1000,
    )
    budget = int((24 if args.smoke else 320) * args.scale)

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    runs: dict[str, list[StepBudget]] = {s: [] for s in args.strategies}
    searches = [s for s in args.strategies if s != "seed_alone"]
    if "seed_alone" in args.strategies:
        context = multiprocessing.get_context("spawn")
        with context.Pool(len(seeds)) as pool:
            jobs = [(seed, base, budget) for seed in seeds]
            runs["seed_alone"] = pool.starmap(train_seed_alone, jobs)
    if searches:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            with tempfile.TemporaryDirectory() as storage:
                for seed in seeds:
                    for strategy in searches:
                        runs[strategy].append(run_strategy(strategy, seed, base, budget, storage))
        finally:
            ray.shutdown()

    report = {
        "budget_steps": budget,
        "target_val_rmse": args.target,
        "seeds": args.seeds,
        "strategies": {
            strategy: {
                "steps_to_target": summarise([r.steps_to(args.target) for r in stoppers]),
                "best_val_rmse": summarise([r.best_within_budget() for r in stoppers]),
                "steps_spent": [r.spent for r in stoppers],
                "trials": [list(r.trials.values()) for r in stoppers],
            }
            for strategy, stoppers in runs.items()
        },
    }
    ratio, bound = compare(report["strategies"], budget)
    report["tpe_asha_over_random_full"] = ratio
    report["ratio_is_upper_bound"] = bound
    if args.json:
        print(json.dumps(report))
        return

    print(
        f"budget {budget} optimiser steps per run, target val_rmse {args.target} px, "
        f"{args.seeds} seeds"
    )
    print(
        f"{'strategy':<13}{'steps to target (median, range, reached)':<44}"
        f"{'best val_rmse (median, range)'}"
    )
    for strategy, figures in report["strategies"].items():
        steps, best = figures["steps_to_target"], figures["best_val_rmse"]
        median = steps["median"] if steps["median"] is not None else f">{budget}"
        reach = (
            f"{median:>6} [{steps['min'] or '-'}, {steps['max'] or '-'}] "
            f"{steps['reached']}/{args.seeds}"
        )
        print(
            f"{strategy:<13}{reach:<44}{best['median']:.2f} [{best['min']:.2f}, {best['max']:.2f}]"
        )
    if ratio is None:
        print("tpe_asha / random_full: none (tpe_asha missed the target, or one was not run)")
    else:
        print(
            f"tpe_asha / random_full, median steps to target: {'< ' if bound else ''}{ratio:.2f}"
            + (" (random_full missed the target in most runs)" if bound else "")
        )


if __name__ == "__main__":
    main()
