"""How many trials should share one GPU: aggregate training speed and GPU use at 1, 2, 4 and 8.

    python benchmarks/gpu_packing.py            # about 3 minutes on one H200
    python benchmarks/gpu_packing.py --smoke    # tiny; without a GPU it says so and exits 0
    python benchmarks/gpu_packing.py --json     # the same figures as one JSON object

For each packing of k trials per GPU, k real Ray Tune trials of one fixed config run at once,
each as `tuner.trainable.train_circles` with {"cpu": 1, "gpu": 1/k} and the fixed settings of
experiments/circles_asha.py (bf16, channels_last, 100 steps per iteration, 2,048 validation
images, a checkpoint every 2 iterations). Every trial stops after `--seconds` of its own time.

Where Ray or Optuna cannot be imported (an offline GPU machine with torch but without them:
Ray's wheel, 79 MB, is more than some such machines let one carry in), `--runner auto` falls
back to `processes`: k plain processes on the GPU, each running the trainable's loop (train,
validate, a checkpoint every 2 iterations, one torch thread as Ray gives a one-CPU trial) without
Ray's reporting or TensorBoard files. A fractional GPU in Ray is bookkeeping only, so the GPU
sees the same contention; the output names the runner that was used.

The figures cover the window in which every trial had reported once (so all had started and
warmed up) and none had stopped yet:

- aggregate samples/s: each trial's training samples/s (its reported `samples_per_s`, median over
  the window) summed over the trials;
- effective samples/s: the optimiser steps that all trials advanced in the window, times the
  batch, over its length; validation, reports and checkpoints take their share of it;
- GPU utilisation (mean over the window of `nvidia-smi`'s utilization.gpu, sampled every 0.5 s)
  and the most GPU memory in use. Utilisation is the share of time in which any kernel ran, not
  how much of the GPU it used: a small network can show a high figure on a GPU it barely fills,
  so the samples/s decide and utilisation says why.

A packing whose trials fail, or never all train at once, is reported with its error and left
out of the recommendation.

The recommended gpus_per_trial is the packing with the best effective samples/s, where a packing
counts as better than a smaller one only if it beats it by at least 10 %: a smaller gain does not
pay for making each trial, and so each of ASHA's decisions about it, that much slower.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import json
import multiprocessing
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from data import CircleConfig
from models import ModelConfig, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent
PACKINGS = (1, 2, 4, 8)
SMOKE_PACKINGS = (1, 2)
WORTH_IT = 1.10  # a larger packing must beat a smaller one by this factor to be recommended
SAMPLE_PERIOD_S = 0.5

# The trial's config: the seed network (the first trial of every search), or a small pooled
# network of the kind a search spends many trials on.
PARAMS: dict[str, dict[str, Any]] = {
    "seed": {
        "depth": 8,
        "filters": 16,
        "kernel_size": 7,
        "activation": "seed",
        "pooling": "none",
        "norm": "none",
        "head": "subnets",
        "lr": 1e-4,
        "beta1": 0.5,
        "beta2": 0.9,
        "batch_size": 64,
    },
    "pooled": {
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
        "batch_size": 64,
    },
}

# What every trial reported, as the driver received it: (time.monotonic(), trial id, step,
# samples_per_s). Module-level because Tune may run a copy of the callback that records it.
_REPORTS: list[tuple[float, str, int, float]] = []


class GpuSampler:
    """Samples GPU utilisation (%) and memory in use (MiB) in a background thread.

    Reads NVML through `pynvml` where it imports, else runs `nvidia-smi`; where neither
    answers, it records nothing and the figures say n/a.
    """

    def __init__(self, index: int = 0, period_s: float = SAMPLE_PERIOD_S) -> None:
        self.index = index
        self.period_s = period_s
        self.samples: list[tuple[float, float, float]] = []  # (time, utilisation %, MiB)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = _nvml_reader(index)
        self.source = "nvml"
        if self._read is None and shutil.which("nvidia-smi") is not None:
            self._read, self.source = functools.partial(_read_nvidia_smi, index), "nvidia-smi"
        if self._read is None:
            self.source = "none"

    def _run(self) -> None:
        while not self._stop.is_set():
            reading = self._read()
            if reading is not None:  # else a missed sample; the mean takes the ones that came
                self.samples.append((time.monotonic(), *reading))
            self._stop.wait(self.period_s)

    def start(self) -> None:
        self.samples = []
        if self._read is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> list[tuple[float, float, float]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        return self.samples


def _nvml_reader(index: int) -> Callable[[], tuple[float, float] | None] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    except pynvml.NVMLError:
        return None

    def read() -> tuple[float, float] | None:
        try:
            utilisation = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).used
        except pynvml.NVMLError:
            return None
        return float(utilisation), memory / 2**20

    return read


def _read_nvidia_smi(index: int) -> tuple[float, float] | None:
    command = [
        "nvidia-smi",
        f"--id={index}",
        "--query-gpu=utilization.gpu,memory.used",
        "--format=csv,noheader,nounits",
    ]
    try:
        line = subprocess.run(command, capture_output=True, text=True, timeout=5, check=True)
        utilisation, memory = line.stdout.strip().split(",")
        return float(utilisation), float(memory)
    except (subprocess.SubprocessError, OSError, ValueError):
        return None


def _recorder():
    from ray import tune

    class Recorder(tune.Callback):
        """Notes every result as the driver receives it."""

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            _REPORTS.append(
                (time.monotonic(), trial.trial_id, int(result["step"]), result["samples_per_s"])
            )

    return Recorder()


class NoWindowError(RuntimeError):
    """The trials of a packing never all trained at the same time."""


def steady_figures(
    reports: list[tuple[float, str, int, float]],
    samples: list[tuple[float, float, float]],
    trials: int,
    batch_size: int,
) -> dict[str, Any]:
    """The packing's figures over the window when all trials were training (see the top)."""
    by_trial: dict[str, list[tuple[float, int, float]]] = defaultdict(list)
    for at, trial_id, step, samples_per_s in reports:
        by_trial[trial_id].append((at, step, samples_per_s))
    if len(by_trial) != trials:
        raise NoWindowError(f"{len(by_trial)} of {trials} trials reported; no steady window")
    start = max(rows[0][0] for rows in by_trial.values())
    end = min(rows[-1][0] for rows in by_trial.values())
    if end <= start:
        raise NoWindowError(
            "no window with every trial running: the first trial stopped before the last one "
            "reported; raise --seconds"
        )

    aggregate = effective_steps = 0.0
    for rows in by_trial.values():
        # Training speed: the trial's own reports inside the window (or all but its first).
        inside = [r[2] for r in rows if start < r[0] <= end] or [r[2] for r in rows[1:]]
        aggregate += statistics.median(inside or [rows[0][2]])

        # Steps advanced in the window, interpolated between reports.
        times = [r[0] for r in rows]
        steps = [float(r[1]) for r in rows]
        effective_steps += _interpolate(end, times, steps) - _interpolate(start, times, steps)

    in_window = [s for s in samples if start <= s[0] <= end]
    return {
        "trials": trials,
        "gpus_per_trial": 1 / trials,
        "aggregate_samples_per_s": aggregate,
        "effective_samples_per_s": effective_steps * batch_size / (end - start),
        "per_trial_samples_per_s": aggregate / trials,
        "gpu_utilisation_mean": statistics.fmean(s[1] for s in in_window) if in_window else None,
        "gpu_memory_max_mib": max(s[2] for s in samples) if samples else None,
        "window_s": end - start,
        "utilisation_samples": len(in_window),
    }


def _interpolate(at: float, times: list[float], values: list[float]) -> float:
    for i in range(1, len(times)):
        if at <= times[i]:
            fraction = (at - times[i - 1]) / (times[i] - times[i - 1])
            return values[i - 1] + fraction * (values[i] - values[i - 1])
    return values[-1]


def run_packing(
    trials: int,
    gpus_per_trial: float,
    params: dict[str, Any],
    settings: dict[str, Any],
    seconds: float,
    storage: str,
    sampler: GpuSampler,
) -> dict[str, Any]:
    """`trials` Ray Tune trials at once, each with `gpus_per_trial`, and their figures."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from tuner import ExperimentConfig
    from tuner.trainable import SETTINGS, train_circles

    experiment = ExperimentConfig(**settings)

    trainable = tune.with_resources(train_circles, {"cpu": 1, "gpu": gpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        param_space={**params, SETTINGS: experiment.settings()},
        tune_config=tune.TuneConfig(
            num_samples=trials, max_concurrent_trials=trials, reuse_actors=False
        ),
        run_config=tune.RunConfig(
            name=f"packing_{trials}",
            storage_path=storage,
            stop={"time_total_s": seconds},
            checkpoint_config=tune.CheckpointConfig(num_to_keep=experiment.keep_checkpoints),
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), _recorder()],
            verbose=0,
        ),
    )

    _REPORTS.clear()
    sampler.start()
    try:
        results = tuner.fit()
    finally:
        samples = sampler.stop()
    if results.errors:
        # A packing can fail for its own reasons (GPU memory, say): say why, go on to the next.
        return {
            "trials": trials,
            "gpus_per_trial": gpus_per_trial,
            "error": repr(results.errors[0]),
        }
    try:
        return steady_figures(list(_REPORTS), samples, trials, params["batch_size"])
    except NoWindowError as error:
        return {"trials": trials, "gpus_per_trial": gpus_per_trial, "error": str(error)}


def recommend(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The packing to use: the best effective samples/s, counting only gains of >= 10 %."""
    measured = [row for row in rows if "error" not in row]
    if not measured:
        return None
    chosen = measured[0]
    for row in measured[1:]:
        if row["effective_samples_per_s"] >= chosen["effective_samples_per_s"] * WORTH_IT:
            chosen = row
    return chosen


def asha_settings() -> dict[str, Any]:
    """The keyword arguments of EXPERIMENT in experiments/circles_asha.py.

    Read from the source rather than by running the script, which imports Ray and Optuna: the
    process runner must work without them.
    """
    path = ROOT / "experiments" / "circles_asha.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "EXPERIMENT" for target in node.targets
        ):
            return {k.arg: ast.literal_eval(k.value) for k in node.value.keywords}
    raise ValueError(f"{path} must define EXPERIMENT = ExperimentConfig(...), but does not")


def trial_settings(smoke: bool) -> dict[str, Any]:
    """circles_asha's settings, run until the stop by time ends each trial."""
    settings = {**asha_settings(), "max_iterations": 100_000, "storage_path": "unused"}
    if smoke:
        settings.update(steps_per_iteration=5, val_size=64)
    return settings


def model_configs(
    params: dict[str, Any], settings: dict[str, Any]
) -> tuple[ModelConfig, TrainConfig]:
    """What `tuner.configs_from_params` makes of `params`, without importing `tuner` (Ray).

    Only for the configs in PARAMS; the tests check that both agree.
    """
    activation = params["activation"]
    if activation == "seed":  # the seed network's pattern, repeated to the depth
        pattern = ModelConfig.seed().activations
        activation = tuple(pattern[i % len(pattern)] for i in range(params["depth"]))
    model = ModelConfig(
        depth=params["depth"],
        filters=params["filters"],
        kernel_size=params["kernel_size"],
        activation=activation,
        pooling=params["pooling"],
        pool_every=params.get("pool_every", 1),
        norm=params["norm"],
        head=params["head"],
        head_width=params.get("head_width", 64),
    )
    train = TrainConfig(
        lr=params["lr"],
        beta1=params["beta1"],
        beta2=params["beta2"],
        batch_size=params["batch_size"],
        **{
            k: settings[k]
            for k in ("val_size", "precision", "channels_last", "compile")
            if k in settings
        },
    )
    return model, train


def _process_trial(
    name: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
    settings: dict[str, Any],
    seconds: float,
    device: str,
    reports,
) -> None:
    """One trial as a plain process: the trainable's iterations until `seconds` have passed."""
    torch.set_num_threads(1)  # what Ray's OMP_NUM_THREADS gives a trial of one CPU
    begin = time.monotonic()
    trainer = Trainer(model_config, train_config, CircleConfig(), device, settings.get("seed", 0))
    checkpoint_every = settings.get("checkpoint_every", 1)
    iteration = 0
    with tempfile.TemporaryDirectory() as directory:
        while True:
            trainer.train_steps(settings["steps_per_iteration"])
            trainer.evaluate()
            iteration += 1
            if iteration % checkpoint_every == 0:
                torch.save(trainer.state_dict(), Path(directory, "state.pt"))
            reports.put((time.monotonic(), name, trainer.step, trainer.samples_per_s))
            if time.monotonic() - begin >= seconds:
                return


def run_packing_processes(
    trials: int,
    params: dict[str, Any],
    settings: dict[str, Any],
    seconds: float,
    sampler: GpuSampler,
    device: str = "cuda",
) -> dict[str, Any]:
    """`trials` trials at once as plain processes on `device`, and their figures."""
    model_config, train_config = model_configs(params, settings)
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    processes = [
        context.Process(
            target=_process_trial,
            args=(str(i), model_config, train_config, settings, seconds, device, reports),
            daemon=True,
        )
        for i in range(trials)
    ]
    received: list[tuple[float, str, int, float]] = []
    sampler.start()
    try:
        for process in processes:
            process.start()
        while any(process.is_alive() for process in processes):
            with contextlib.suppress(queue.Empty):
                received.append(reports.get(timeout=0.2))
        for process in processes:
            process.join()
        with contextlib.suppress(queue.Empty):
            while True:
                received.append(reports.get(timeout=0.5))
    finally:
        samples = sampler.stop()
        for process in processes:
            if process.is_alive():
                process.terminate()
    failed = [process.exitcode for process in processes if process.exitcode != 0]
    if failed:
        error = f"{len(failed)} of {trials} trial processes failed, exit codes {failed}"
        return {"trials": trials, "gpus_per_trial": 1 / trials, "error": error}
    try:
        return steady_figures(received, samples, trials, params["batch_size"])
    except NoWindowError as error:
        return {"trials": trials, "gpus_per_trial": 1 / trials, "error": str(error)}


def ray_importable() -> bool:
    """Whether the Ray runner can run here: Ray Tune and the harness (which needs Optuna)."""
    try:
        import tuner  # noqa: F401
    except ImportError:
        return False
    return True


def print_table(results: dict[str, Any]) -> None:
    if not results["measured"]:
        print(results["reason"])
        return
    print(
        f"GPU packing on {results['device']}: config {results['model']!r}, circles_asha's "
        f"settings, trials run as {results['runner']}, each stopped after "
        f"{results['seconds']:g} s of its own time"
    )
    header = (
        f"{'trials/GPU':>10} {'gpus_per_trial':>14} {'aggregate':>10} {'effective':>10} "
        f"{'per trial':>10} {'GPU util %':>10} {'GPU MiB':>8} {'window s':>8}"
    )
    print(header)
    for row in results["packings"]:
        if "error" in row:
            print(f"{row['trials']:>10} {row['gpus_per_trial']:>14g}   failed: {row['error']}")
            continue
        utilisation = row["gpu_utilisation_mean"]
        memory = row["gpu_memory_max_mib"]
        print(
            f"{row['trials']:>10} {row['gpus_per_trial']:>14g} "
            f"{row['aggregate_samples_per_s']:>10.0f} {row['effective_samples_per_s']:>10.0f} "
            f"{row['per_trial_samples_per_s']:>10.0f} "
            f"{'n/a' if utilisation is None else f'{utilisation:.0f}':>10} "
            f"{'n/a' if memory is None else f'{memory:.0f}':>8} {row['window_s']:>8.1f}"
        )
    print("(samples/s: aggregate = training only, summed; effective = with validation etc.)")
    recommended = results["recommended_gpus_per_trial"]
    print(
        f"recommended gpus_per_trial for experiments/circles_asha.py: "
        f"{'none (no packing measured)' if recommended is None else f'{recommended:g}'} "
        f"({results['rule']})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 and 2 trials")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", choices=sorted(PARAMS), default="seed", help="the config")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="each trial's running time (default: 30)"
    )
    parser.add_argument(
        "--runner",
        choices=("auto", "ray", "processes"),
        default="auto",
        help="Ray Tune trials, or plain processes; auto: Ray where it imports (default)",
    )
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        parser.error(f"--seconds must be > 0, but got {args.seconds}")

    if not torch.cuda.is_available():
        results: dict[str, Any] = {
            "measured": False,
            "reason": "needs a GPU; unmeasured",
            "torch": torch.__version__,
        }
    else:
        runner = args.runner
        if runner == "auto":
            runner = "ray" if ray_importable() else "processes"
        packings = SMOKE_PACKINGS if args.smoke else PACKINGS
        seconds = min(args.seconds, 8.0) if args.smoke else args.seconds
        results = measure(args.model, packings, seconds, trial_settings(args.smoke), runner)

    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)


def measure(
    model: str,
    packings: tuple[int, ...],
    seconds: float,
    settings: dict[str, Any],
    runner: str,
) -> dict[str, Any]:
    """Every packing in turn on the first visible GPU, and the recommendation."""
    params = PARAMS[model]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    sampler = GpuSampler(int(visible) if visible.isdigit() else 0)
    rows = []
    with contextlib.ExitStack() as stack:
        if runner == "ray":
            import ray

            # Trials write their own TensorBoard files; Ray's loggers would only duplicate them.
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
            # Every packing fits at once whatever the core count: a trial's CPU work is small.
            ray.init(
                num_cpus=max(os.cpu_count() or 1, max(packings)),
                num_gpus=1,
                include_dashboard=False,
                log_to_driver=False,
            )
            stack.callback(ray.shutdown)
            # Tune prints its progress to stdout, which is kept for the results.
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            storage = stack.enter_context(tempfile.TemporaryDirectory())
        for trials in packings:
            if runner == "ray":
                row = run_packing(trials, 1 / trials, params, settings, seconds, storage, sampler)
            else:
                row = run_packing_processes(trials, params, settings, seconds, sampler)
            rows.append(row)
            # Progress on stderr, so that a run cut short still shows what it measured.
            print(f"packing {trials}: {json.dumps(row)}", file=sys.stderr, flush=True)

    chosen = recommend(rows)
    return {
        "measured": True,
        "runner": runner,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "model": model,
        "params": params,
        "settings": settings,
        "seconds": seconds,
        "sampler": sampler.source,
        "packings": rows,
        "recommended_gpus_per_trial": None if chosen is None else chosen["gpus_per_trial"],
        "recommended_trials_per_gpu": None if chosen is None else chosen["trials"],
        "rule": f"best effective samples/s; a larger packing must gain >= {WORTH_IT - 1:.0%}",
    }


if __name__ == "__main__":
    main()
