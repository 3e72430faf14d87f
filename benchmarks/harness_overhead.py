"""What the harness costs: a trial's training speed against a bare loop, and per-trial start-up.

    python benchmarks/harness_overhead.py            # about 2 minutes on 2 CPU cores
    python benchmarks/harness_overhead.py --smoke    # seconds; what the tests run

1. One config trained bare (this process, one torch thread) and inside a Tune trial (one CPU),
   each for the same iterations of steps plus a validation pass: samples per second after the
   first iteration, and their ratio (goal: the trial keeps at least 95 % of the bare speed);
   also the ratio counting the first iteration, which includes each side's start-up.
2. Many trivial trials, which report once and end, through the whole harness (Optuna sampling,
   ASHA, checkpoint config, logging) with actor reuse on and off: seconds of wall time per trial
   per concurrent slot (goal: at most 0.2 s with reuse).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import ray
import torch
from ray import tune

from tuner import SEED_PARAMS, ExperimentConfig, SearchSpace, build_tuner, configs_from_params
from tuner.trainable import train_circles

# A small network of the kind a CPU search spends most of its trials on.
PARAMS = {
    **SEED_PARAMS,
    "depth": 4,
    "filters": 16,
    "kernel_size": 5,
    "activation": "relu",
    "pooling": "max",
    "pool_every": 1,
    "norm": "batch",
    "head": "dense",
    "head_width": 64,
    "lr": 3e-3,
    "beta1": 0.9,
    "beta2": 0.999,
    "batch_size": 32,
}


def bare_samples_per_s(experiment: ExperimentConfig) -> dict[str, float]:
    """Samples per second of the plain loop: from the model's construction, and after the
    first iteration (the steady state)."""
    from models import Trainer

    torch.set_num_threads(1)
    start = time.perf_counter()
    model, train = configs_from_params(PARAMS, **experiment.train_options())
    trainer = Trainer(model, train, experiment.circles, "cpu", seed=experiment.seed)
    times = []
    for _ in range(experiment.max_iterations):
        trainer.train_steps(experiment.steps_per_iteration)
        trainer.evaluate()
        times.append(time.perf_counter() - start - sum(times))
    return _rates(times, experiment.steps_per_iteration * train.batch_size)


def trial_samples_per_s(experiment: ExperimentConfig, storage: str) -> dict[str, float]:
    """The same work in one Tune trial, from its iterations' wall times, reports included."""
    trainable = tune.with_resources(train_circles, {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        param_space={**PARAMS, "settings": experiment.settings()},
        run_config=tune.RunConfig(name="one_trial", storage_path=storage, verbose=0),
    )
    result = tuner.fit()[0]
    if result.error:
        raise result.error
    times = list(result.metrics_dataframe["time_this_iter_s"])
    return _rates(times, experiment.steps_per_iteration * PARAMS["batch_size"])


def _rates(times: list[float], samples_per_iteration: int) -> dict[str, float]:
    # The first iteration also pays for starting up (imports, model, validation set); that cost
    # is what the start-cost figure measures, so the steady state leaves it out.
    steady = times[1:] or times
    return {
        "with_start": len(times) * samples_per_iteration / sum(times),
        "steady": len(steady) * samples_per_iteration / sum(steady),
    }


def _report_once(config: dict) -> None:
    tune.report({"val_rmse": 1.0, "training_iteration_done": 1})


def start_cost_s(trials: int, slots: int, reuse: bool, storage: str) -> float:
    """Seconds of wall time per trivial trial per concurrent slot."""
    experiment = ExperimentConfig(
        name=f"trivial_reuse_{reuse}",
        storage_path=storage,
        num_samples=trials,
        max_concurrent=slots,
        max_iterations=1,
        grace_period=1,
        n_startup_trials=trials,
        reuse_actors=reuse,
    )
    tuner = build_tuner(experiment, SearchSpace(), trainable=_report_once)
    start = time.perf_counter()
    results = tuner.fit()
    elapsed = time.perf_counter() - start
    assert len(results) == trials and results.num_errors == 0
    return elapsed * slots / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the tests")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    smoke = args.smoke
    experiment = ExperimentConfig(
        steps_per_iteration=5 if smoke else 50,
        max_iterations=2 if smoke else 6,
        val_size=64 if smoke else 512,
    )
    trials = 4 if smoke else 60
    slots = 2

    ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as storage:
            # Alternate bare and trial runs so that a change in machine load hits both.
            bare, trial = [], []
            for _ in range(1 if smoke else 2):
                bare.append(bare_samples_per_s(experiment))
                trial.append(trial_samples_per_s(experiment, storage + f"/t{len(trial)}"))
            reuse = start_cost_s(trials, slots, True, storage)
            fresh = start_cost_s(trials, slots, False, storage)
    finally:
        ray.shutdown()

    best_bare = max(bare, key=lambda r: r["steady"])
    best_trial = max(trial, key=lambda r: r["steady"])
    figures = {
        "bare_samples_per_s": best_bare["steady"],
        "trial_samples_per_s": best_trial["steady"],
        "trial_over_bare": best_trial["steady"] / best_bare["steady"],
        "trial_over_bare_with_start": best_trial["with_start"] / best_bare["with_start"],
        "start_s_per_trial_per_slot_reuse": reuse,
        "start_s_per_trial_per_slot_no_reuse": fresh,
        "trivial_trials": trials,
        "slots": slots,
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"training, one config, {experiment.steps_per_iteration} steps x "
        f"{experiment.max_iterations} iterations, one CPU thread"
    )
    print(f"  bare loop          {figures['bare_samples_per_s']:10.1f} samples/s, steady state")
    print(f"  inside a trial     {figures['trial_samples_per_s']:10.1f} samples/s, steady state")
    print(f"  trial / bare       {figures['trial_over_bare']:10.1%}   (goal >= 95 %)")
    print(f"  counting start-up  {figures['trial_over_bare_with_start']:10.1%}")
    print(f"start cost, {trials} trivial trials on {slots} slots")
    print(f"  actor reuse on     {reuse:10.3f} s per trial per slot   (goal <= 0.2 s)")
    print(f"  actor reuse off    {fresh:10.3f} s per trial per slot")


if __name__ == "__main__":
    main()
