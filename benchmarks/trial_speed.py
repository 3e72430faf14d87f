"""What each speed setting does to one trial's training speed, as ratios measured in one run.

    python benchmarks/trial_speed.py            # about 4 minutes on 2 CPU cores, plus the GPU part
    python benchmarks/trial_speed.py --smoke    # seconds, tiny sizes; what the tests run
    python benchmarks/trial_speed.py --json     # the same figures as one JSON object

Two representative configs, both at batch 64: the seed network, and a small pooled network
(4 convolutions of 16 filters, kernel 5, max pooling after each, batch norm, dense head).

CPU (always measured). Trials that share a node must share its cores. Two trials run at once, in
two processes, as a search with `max_concurrent=2` runs them: once with torch threads matched to
each trial's share of the cores (what `tuner.trainable` sets, and what Ray's OMP_NUM_THREADS
gives), once with torch's own default in a fresh process (every core, in every trial). The
aggregate samples/s counts only the time when both were training. One trial alone, with each
thread count, is timed for reference. Each round times every case once, in a rotating order, so
that load from other processes falls on all cases alike; ratios are taken within a round and the
median over rounds is reported.

CUDA (only where torch sees a GPU). Against a baseline of fp32, contiguous memory, no compile,
batches made on the GPU and one host-device sync per `train_steps` call (the Trainer as it
is): bf16 autocast, channels_last, both together, torch.compile, cuDNN autotuning, a sync every
step (`loss.item()` in the loop) and batches made on the CPU and copied over. Then fp32 against
bf16 accuracy: val_rmse after the same steps from the same seeds, next to the spread between two
seeds in fp32, so that "bf16 does not hurt accuracy" is a measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from data import CircleConfig, make_batch
from models import ModelConfig, TrainConfig, Trainer

# The two configs timed: the seed network, with its own optimiser, and a small pooled network of
# the kind a search spends many trials on (the optimiser of a typical good trial).
MODELS: dict[str, tuple[ModelConfig, TrainConfig]] = {
    "seed": (ModelConfig.seed(), TrainConfig(batch_size=64)),
    "pooled": (
        ModelConfig(
            depth=4,
            filters=16,
            kernel_size=5,
            activation="relu",
            pooling="max",
            pool_every=1,
            norm="batch",
            head="dense",
            head_width=64,
        ),
        TrainConfig(lr=3e-3, beta1=0.9, beta2=0.999, batch_size=64),
    ),
}

# Speed runs never score the validation set; a small one keeps each Trainer quick to build.
SPEED_VAL_SIZE = 64

# Smoke mode: tiny images and batches, so that every code path runs in seconds.
SMOKE_CIRCLES = CircleConfig(image_size=32, min_radius=4, max_radius=16)
SMOKE_BATCH = 8

# The CUDA variants that are Trainer settings, each a change from the baseline. The others
# (measure_device) drive the baseline Trainer through a local copy of its loop.
TRAINER_VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "bf16": {"precision": "bf16"},
    "channels_last": {"channels_last": True},
    "bf16_channels_last": {"precision": "bf16", "channels_last": True},
    "compile": {"compile": True},
}


# ---------------------------------------------------------------------------------------------
# CPU: threads matched to the trial's share of the cores against torch's default.


def _cpu_worker(connection, barrier, circles: CircleConfig) -> None:
    """One trial's process: trains the model it is told to, with the threads it is told to.

    Sends torch's default thread count first, then, per order, its start time and the time at
    which each step ended (`time.monotonic`, which all processes of a machine share).
    """
    connection.send(torch.get_num_threads())  # the default: nobody has set it in this process
    trainers: dict[str, Trainer] = {}
    while (order := connection.recv()) is not None:
        name, model_config, train_config, threads, seconds, together = order
        torch.set_num_threads(threads)
        if name not in trainers:
            trainers[name] = Trainer(model_config, train_config, circles, "cpu", seed=0)
        trainer = trainers[name]

        # One untimed step at this thread count, then start together with the other trial.
        trainer.train_steps(1)
        if together:
            barrier.wait()
        start = time.monotonic()
        ends: list[float] = []
        while not ends or ends[-1] - start < seconds:
            trainer.train_steps(1)
            ends.append(time.monotonic())
        connection.send((start, ends))


def _steps_done(start: float, ends: list[float], at: float) -> float:
    """Steps one process had done by time `at`, counting the step in progress by its fraction."""
    previous = start
    for done, end in enumerate(ends):
        if at <= end:
            return done + (at - previous) / (end - previous)
        previous = end
    return float(len(ends))


def aggregate_samples_per_s(runs: list[tuple[float, list[float]]], batch_size: int) -> float:
    """Samples/s of all processes together, over the time when every one of them was training."""
    window_start = max(start for start, _ in runs)
    window_end = min(ends[-1] for _, ends in runs)
    if window_end <= window_start:
        raise RuntimeError("the processes' training times did not overlap; nothing to compare")
    steps = sum(
        _steps_done(start, ends, window_end) - _steps_done(start, ends, window_start)
        for start, ends in runs
    )
    return steps * batch_size / (window_end - window_start)


def measure_cpu(
    models: dict[str, tuple[ModelConfig, TrainConfig]],
    circles: CircleConfig,
    trials: int,
    node_cpus: int,
    rounds: int,
    seconds: float,
) -> dict[str, Any]:
    """Matched against default torch threads, for one trial alone and `trials` at once."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(trials)
    pipes = [context.Pipe() for _ in range(trials)]
    workers = [
        context.Process(target=_cpu_worker, args=(child, barrier, circles), daemon=True)
        for _, child in pipes
    ]
    for worker in workers:
        worker.start()
    connections = [parent for parent, _ in pipes]
    try:
        default_threads = connections[0].recv()
        for connection in connections[1:]:
            connection.recv()
        matched_threads = max(1, node_cpus // trials)
        cases = {
            "alone_matched": (1, matched_threads),
            "alone_default": (1, default_threads),
            "concurrent_matched": (trials, matched_threads),
            "concurrent_default": (trials, default_threads),
        }

        figures: dict[str, dict[str, list[float]]] = {
            name: {case: [] for case in cases} for name in models
        }
        for round_index in range(rounds):
            # Rotate the order of the cases each round, so that none always runs first.
            order = list(cases)
            order = order[round_index % len(order) :] + order[: round_index % len(order)]
            for name, (model_config, train_config) in models.items():
                for case in order:
                    processes, threads = cases[case]
                    for connection in connections[:processes]:
                        connection.send(
                            (name, model_config, train_config, threads, seconds, processes > 1)
                        )
                    runs = [connection.recv() for connection in connections[:processes]]
                    figures[name][case].append(
                        aggregate_samples_per_s(runs, train_config.batch_size)
                    )
        for connection in connections:
            connection.send(None)
        for worker in workers:
            worker.join(timeout=30)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()

    results: dict[str, Any] = {
        "node_cpus": node_cpus,
        "concurrent_trials": trials,
        "matched_threads": matched_threads,
        "default_threads": default_threads,
        "rounds": rounds,
        "seconds": seconds,
    }
    for name, per_case in figures.items():
        alone_ratio = _ratios(per_case["alone_matched"], per_case["alone_default"])
        concurrent_ratio = _ratios(per_case["concurrent_matched"], per_case["concurrent_default"])
        results[name] = {
            **{f"{case}_samples_per_s": statistics.median(v) for case, v in per_case.items()},
            "alone_matched_over_default": statistics.median(alone_ratio),
            "concurrent_matched_over_default": statistics.median(concurrent_ratio),
            "rounds": {f"{case}_samples_per_s": v for case, v in per_case.items()},
        }
    return results


def _ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


# ---------------------------------------------------------------------------------------------
# CUDA: each speed setting against the Trainer's defaults, and bf16 against fp32 accuracy.


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loop_steps(
    trainer: Trainer,
    steps: int,
    sync_every_step: bool = False,
    cpu_generator: torch.Generator | None = None,
) -> None:
    """`Trainer.train_steps` of an fp32, contiguous Trainer, with one thing changed.

    `sync_every_step` reads the loss to the host after every step, as a loop that accumulates
    `loss.item()` does; a `cpu_generator` makes each batch on the CPU, copied over after.
    """
    assert trainer.train_config.precision == "fp32" and trainer.memory_format is None
    config, device = trainer.train_config, trainer.device
    trainer.model.train()
    loss_sum = torch.zeros((), device=device)
    for _ in range(steps):
        if cpu_generator is not None:
            images, labels = make_batch(config.batch_size, trainer.circles, cpu_generator)
            images, labels = images.to(device), labels.to(device)
        else:
            images, labels = make_batch(
                config.batch_size, trainer.circles, trainer.generator, device
            )
        predictions = trainer.forward(images)
        loss = nn.functional.mse_loss(predictions.float(), labels)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        if sync_every_step:
            loss_sum += loss.item()
        else:
            loss_sum += loss.detach()
    loss_sum.item()


def _cudnn_benchmark_steps(trainer: Trainer, steps: int) -> None:
    """The Trainer's own loop with cuDNN choosing convolution algorithms by timing them."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        trainer.train_steps(steps)
    finally:
        torch.backends.cudnn.benchmark = previous


def _timed(run: Callable[..., object], steps: int, batch_size: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    run(steps)
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def measure_device(
    models: dict[str, tuple[ModelConfig, TrainConfig]],
    circles: CircleConfig,
    device: torch.device,
    rounds: int,
    steps: int,
    warmup_steps: int,
) -> dict[str, Any]:
    """Samples/s of every variant on `device`, in interleaved rounds, and ratios to baseline."""
    results: dict[str, Any] = {}
    for name, (model_config, train_config) in models.items():
        # Build one Trainer per setting, all from the same seed.
        trainers = {
            variant: Trainer(
                model_config,
                dataclasses.replace(train_config, val_size=SPEED_VAL_SIZE, **changes),
                circles,
                device,
                seed=0,
            )
            for variant, changes in TRAINER_VARIANTS.items()
        }
        baseline = trainers["baseline"]
        runs: dict[str, Callable[..., object]] = {
            variant: trainer.train_steps for variant, trainer in trainers.items()
        }
        cpu_generator = torch.Generator().manual_seed(0)
        runs["loop_one_sync"] = functools.partial(_loop_steps, baseline)
        runs["sync_every_step"] = functools.partial(_loop_steps, baseline, sync_every_step=True)
        runs["data_from_cpu"] = functools.partial(
            _loop_steps, baseline, cpu_generator=cpu_generator
        )
        runs["cudnn_benchmark"] = functools.partial(_cudnn_benchmark_steps, baseline)

        # Warm up every variant (torch.compile compiles here), then interleave the rounds.
        for run in runs.values():
            run(warmup_steps)
        samples_per_s: dict[str, list[float]] = {variant: [] for variant in runs}
        for _ in range(rounds):
            for variant, run in runs.items():
                samples_per_s[variant].append(_timed(run, steps, train_config.batch_size, device))

        base = samples_per_s["baseline"]
        results[name] = {
            "samples_per_s": {v: statistics.median(s) for v, s in samples_per_s.items()},
            "over_baseline": {
                v: statistics.median(_ratios(s, base)) for v, s in samples_per_s.items()
            },
            "sync_every_step_over_loop_one_sync": statistics.median(
                _ratios(samples_per_s["sync_every_step"], samples_per_s["loop_one_sync"])
            ),
            "rounds": samples_per_s,
        }
    return results


def measure_accuracy(
    models: dict[str, tuple[ModelConfig, TrainConfig]],
    circles: CircleConfig,
    device: torch.device,
    steps: int,
    val_size: int,
    seeds: tuple[int, ...] = (0, 1),
) -> dict[str, Any]:
    """val_rmse after `steps` steps in fp32 and in bf16, from the same seeds."""
    results: dict[str, Any] = {}
    for name, (model_config, train_config) in models.items():
        val_rmse: dict[str, dict[str, float]] = {}
        for precision in ("fp32", "bf16"):
            config = dataclasses.replace(train_config, precision=precision, val_size=val_size)
            val_rmse[precision] = {}
            for seed in seeds:
                trainer = Trainer(model_config, config, circles, device, seed=seed)
                trainer.train_steps(steps)
                val_rmse[precision][str(seed)] = trainer.evaluate()["val_rmse"]
        fp32, bf16 = val_rmse["fp32"], val_rmse["bf16"]
        results[name] = {
            "steps": steps,
            "val_rmse": val_rmse,
            # bf16 minus fp32 from the same seed, against how far two fp32 seeds lie apart.
            "bf16_minus_fp32": {seed: bf16[seed] - fp32[seed] for seed in fp32},
            "fp32_seed_spread": max(fp32.values()) - min(fp32.values()),
        }
    return results


# ---------------------------------------------------------------------------------------------
# Output.


def print_table(results: dict[str, Any]) -> None:
    cpu = results["cpu"]
    print(
        f"Training samples/s, batch {results['batch_size']}, {results['image_size']} px images, "
        f"torch {results['torch']}"
    )
    print(
        f"CPU: {cpu['node_cpus']} cores; {cpu['concurrent_trials']} trials at once, matched = "
        f"{cpu['matched_threads']} thread(s) each, torch default = {cpu['default_threads']}; "
        f"{cpu['rounds']} interleaved rounds of ~{cpu['seconds']:g} s per case; load average "
        f"{cpu['load_average_1min'][0]:.1f} before, {cpu['load_average_1min'][1]:.1f} after"
    )
    print(f"  {'model':<8} {'case':<34} {'matched':>10} {'default':>10} {'matched/default':>16}")
    for name in results["models"]:
        figures = cpu[name]
        for case, label in (
            ("alone", "1 trial alone"),
            ("concurrent", f"{cpu['concurrent_trials']} trials at once, aggregate"),
        ):
            print(
                f"  {name:<8} {label:<34} {figures[f'{case}_matched_samples_per_s']:>10.1f} "
                f"{figures[f'{case}_default_samples_per_s']:>10.1f} "
                f"{figures[f'{case}_matched_over_default']:>16.2f}"
            )

    cuda = results["cuda"]
    if cuda is None:
        print(results["cuda_note"])
        return
    print(f"CUDA: {cuda['device']}; {cuda['rounds']} interleaved rounds of {cuda['steps']} steps")
    print(f"  {'model':<8} {'variant':<20} {'samples/s':>11} {'x baseline':>11}")
    for name, figures in cuda["speed"].items():
        for variant, value in figures["samples_per_s"].items():
            ratio = figures["over_baseline"][variant]
            print(f"  {name:<8} {variant:<20} {value:>11.0f} {ratio:>11.2f}")
    print("  accuracy: val_rmse (px) after the same steps from the same seeds")
    for name, figures in cuda["accuracy"].items():
        shown = ", ".join(
            f"seed {seed}: fp32 {figures['val_rmse']['fp32'][seed]:.3f} "
            f"bf16 {figures['val_rmse']['bf16'][seed]:.3f}"
            for seed in figures["val_rmse"]["fp32"]
        )
        print(
            f"  {name:<8} {figures['steps']} steps; {shown}; "
            f"fp32 seed spread {figures['fp32_seed_spread']:.3f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--cpu-rounds", type=int, default=3, help="CPU rounds (default: 3)")
    parser.add_argument(
        "--cpu-seconds", type=float, default=5.0, help="seconds per CPU case (default: 5)"
    )
    parser.add_argument(
        "--cpu-trials", type=int, default=2, help="trials sharing the node (default: 2)"
    )
    parser.add_argument("--cuda-rounds", type=int, default=5, help="CUDA rounds (default: 5)")
    parser.add_argument(
        "--cuda-steps", type=int, default=100, help="steps per CUDA timing (default: 100)"
    )
    parser.add_argument(
        "--accuracy-steps", type=int, default=400, help="steps before val_rmse (default: 400)"
    )
    args = parser.parse_args(argv)
    for name in ("cpu_rounds", "cpu_trials", "cuda_rounds", "cuda_steps", "accuracy_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, but got {getattr(args, name)}")
    if not (math.isfinite(args.cpu_seconds) and args.cpu_seconds > 0):
        parser.error(f"--cpu-seconds must be a positive number, but got {args.cpu_seconds}")

    circles = CircleConfig.seed()
    models = MODELS
    warmup_steps, val_size = 10, 2048
    if args.smoke:
        circles = SMOKE_CIRCLES
        models = {
            name: (model, dataclasses.replace(train, batch_size=SMOKE_BATCH))
            for name, (model, train) in MODELS.items()
        }
        args.cpu_rounds, args.cpu_seconds = 1, 0.01
        args.cuda_rounds, args.cuda_steps, args.accuracy_steps = 1, 3, 5
        warmup_steps, val_size = 2, 64
    speed_models = {
        name: (model, dataclasses.replace(train, val_size=SPEED_VAL_SIZE))
        for name, (model, train) in models.items()
    }
    batch_size = next(iter(models.values()))[1].batch_size

    # CPU, always.
    node_cpus = len(os.sched_getaffinity(0))
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {
        "torch": torch.__version__,
        "smoke": args.smoke,
        "batch_size": batch_size,
        "image_size": circles.image_size,
        "models": {name: model.to_dict() for name, (model, _) in models.items()},
        "cpu": measure_cpu(
            speed_models, circles, args.cpu_trials, node_cpus, args.cpu_rounds, args.cpu_seconds
        ),
        "cuda": None,
    }
    # Other work on the node slows threads that wait for each other most: say how busy it was.
    results["cpu"]["load_average_1min"] = [load_before, os.getloadavg()[0]]

    # CUDA, where there is one.
    if torch.cuda.is_available():
        device = torch.device("cuda")
        results["cuda"] = {
            "device": torch.cuda.get_device_name(device),
            "torch_threads": torch.get_num_threads(),
            "rounds": args.cuda_rounds,
            "steps": args.cuda_steps,
            "speed": measure_device(
                models, circles, device, args.cuda_rounds, args.cuda_steps, warmup_steps
            ),
            "accuracy": measure_accuracy(models, circles, device, args.accuracy_steps, val_size),
        }
    else:
        results["cuda_note"] = "CUDA: not available here, unmeasured"

    if args.json:
        json.dump(results, sys.stdout)
        print()
    else:
        print_table(results)


if __name__ == "__main__":
    main()
