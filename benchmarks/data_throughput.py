"""Training-sample throughput: the seed notebook's per-sample loop against `make_batch`.

python benchmarks/data_throughput.py           # 5 interleaved rounds of about 1 s per method
python benchmarks/data_throughput.py --json    # the same, as one JSON object
python benchmarks/data_throughput.py --smoke   # a couple of seconds; what the tests run

The seed's drawing loop is imported from `tests`, so that the benchmark times exactly the loop
that the pixel-for-pixel tests compare against (`python -m benchmarks.data_throughput` works too).

The CPU figures are taken on one thread (`torch.set_num_threads(1)`); the seed loop is
single-threaded Python anyway. Each round times the seed loop and then our generator at every
batch size, one after the other, so that load from other processes falls on all of them alike;
the ratio reported is the median over rounds of (ours / seed) within a round. With CUDA present
the generator is also timed on the GPU at large batches.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from data import CircleConfig, make_batch

try:
    from tests.seed_reference import seed_draw_circle
except ModuleNotFoundError:  # run as a file: the repository root is not on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.seed_reference import seed_draw_circle

# The goals this benchmark checks: ours against the seed loop on one CPU thread, and samples per
# second on one GPU (stated for an H200).
CPU_GOAL_RATIO = 50.0
CUDA_GOAL_SAMPLES_PER_S = 1_000_000


def seed_sample(config: CircleConfig) -> tuple[np.ndarray, np.ndarray]:
    """One training sample made as the seed notebook made it: noise, a random circle, a label."""
    size = config.image_size
    image = np.random.random((size, size)).astype(np.float32)
    span = config.max_radius - config.min_radius
    radius = int(random.random() * span + config.min_radius)
    x = random.random() * size
    y = random.random() * size
    seed_draw_circle(image, x, y, radius, config.darkness, config.width, config.dots)
    return image, np.array([x, y, radius + config.width / 2], dtype=np.float32)


def time_seed(seconds: float, config: CircleConfig) -> float:
    """Samples per second of the seed loop, run for about `seconds`."""
    count = 0
    start = time.perf_counter()
    while True:
        seed_sample(config)
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def time_ours(
    batch_size: int,
    seconds: float,
    config: CircleConfig,
    generator: torch.Generator,
    device: torch.device,
) -> float:
    """Samples per second of `make_batch` at `batch_size` on `device`, run for about `seconds`."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    count = 0
    start = time.perf_counter()
    while count == 0 or time.perf_counter() - start < seconds:
        make_batch(batch_size, config, generator, device)
        count += batch_size
    # GPU launches are asynchronous: the clock stops once every queued batch has been made.
    if cuda:
        torch.cuda.synchronize(device)
    return count / (time.perf_counter() - start)


def measure_cpu(
    rounds: int, seconds: float, batch_sizes: list[int], config: CircleConfig
) -> dict[str, object]:
    """Interleaved rounds of the seed loop and of ours at each batch size, on one CPU thread."""
    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)

    # Warm up both, so that no round pays for first-call caches and allocations.
    time_seed(min(seconds, 0.1), config)
    for batch_size in batch_sizes:
        time_ours(batch_size, min(seconds, 0.1), config, generator, cpu)

    seed_rounds: list[float] = []
    ours_rounds: dict[int, list[float]] = {b: [] for b in batch_sizes}
    for _ in range(rounds):
        seed_rounds.append(time_seed(seconds, config))
        for batch_size in batch_sizes:
            ours_rounds[batch_size].append(time_ours(batch_size, seconds, config, generator, cpu))

    ratio_rounds = {
        b: [ours / seed for ours, seed in zip(ours_rounds[b], seed_rounds, strict=True)]
        for b in batch_sizes
    }
    return {
        "seed_samples_per_s": statistics.median(seed_rounds),
        "ours_samples_per_s": {str(b): statistics.median(ours_rounds[b]) for b in batch_sizes},
        "ratio": {str(b): statistics.median(ratio_rounds[b]) for b in batch_sizes},
        "seed_rounds": seed_rounds,
        "ours_rounds": {str(b): ours_rounds[b] for b in batch_sizes},
        "ratio_rounds": {str(b): ratio_rounds[b] for b in batch_sizes},
    }


def measure_cuda(
    rounds: int, seconds: float, batch_sizes: list[int], config: CircleConfig
) -> dict[str, object] | None:
    """Samples per second of ours on the first CUDA device, or None where there is none."""
    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda")
    generator = torch.Generator(device).manual_seed(0)
    samples_per_s: dict[str, float] = {}
    for batch_size in batch_sizes:
        time_ours(batch_size, min(seconds, 0.2), config, generator, device)  # warm-up
        per_round = [
            time_ours(batch_size, seconds, config, generator, device) for _ in range(rounds)
        ]
        samples_per_s[str(batch_size)] = statistics.median(per_round)
    return {"device": torch.cuda.get_device_name(device), "samples_per_s": samples_per_s}


def print_table(results: dict[str, object]) -> None:
    seed = results["seed_samples_per_s"]
    print(
        f"Training samples ({results['image_size']} x {results['image_size']}) per second, "
        f"torch {results['torch']}, {results['rounds']} interleaved rounds of "
        f"~{results['seconds']:g} s per method"
    )
    print(f"{'method':<40} {'samples/s':>12} {'x seed':>8}")
    print(f"{'seed loop, one sample at a time (CPU)':<40} {seed:>12,.0f} {1.0:>8.1f}")
    for batch, ours in results["ours_samples_per_s"].items():
        name = f"make_batch, batch {batch}, 1 CPU thread"
        print(f"{name:<40} {ours:>12,.0f} {results['ratio'][batch]:>8.1f}")
    cuda = results["cuda"]
    if cuda is not None:
        for batch, ours in cuda["samples_per_s"].items():
            name = f"make_batch, batch {batch}, CUDA"
            print(f"{name:<40} {ours:>12,.0f} {ours / seed:>8.0f}")

    print()
    for batch, ratios in results["ratio_rounds"].items():
        shown = " ".join(f"{r:.1f}" for r in ratios)
        median = results["ratio"][batch]
        print(f"ours / seed per round, batch {batch}: {shown} (median {median:.1f})")
    headline = next(iter(results["ratio"]))
    met = "met" if results["ratio"][headline] >= CPU_GOAL_RATIO else "NOT met"
    print(f"CPU goal >= {CPU_GOAL_RATIO:g}x the seed loop at batch {headline}: {met}")
    if cuda is None:
        print("CUDA: not available here, so the GPU throughput is unmeasured.")
    else:
        best = max(cuda["samples_per_s"].values())
        met = "met" if best >= CUDA_GOAL_SAMPLES_PER_S else "NOT met"
        print(f"CUDA goal >= {CUDA_GOAL_SAMPLES_PER_S:,} samples/s on {cuda['device']}: {met}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="seconds per method per round (default: 1)"
    )
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[64, 256], help="CPU batch sizes"
    )
    parser.add_argument(
        "--cuda-batch-sizes", type=int, nargs="+", default=[4096, 16384], help="GPU batch sizes"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--smoke", action="store_true", help="tiny rounds; a couple of seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds, args.cuda_batch_sizes = 2, 0.05, [256]
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, but got {args.rounds}")
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        parser.error(f"--seconds must be a positive number, but got {args.seconds}")
    if min(args.batch_sizes + args.cuda_batch_sizes) < 1:
        parser.error("batch sizes must be >= 1")

    config = CircleConfig.seed()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results: dict[str, object] = {
            "image_size": config.image_size,
            "torch": torch.__version__,
            "cpu_threads": 1,
            "rounds": args.rounds,
            "seconds": args.seconds,
            **measure_cpu(args.rounds, args.seconds, args.batch_sizes, config),
            "cuda": measure_cuda(args.rounds, args.seconds, args.cuda_batch_sizes, config),
        }
    finally:
        torch.set_num_threads(threads)
    if results["cuda"] is None:
        results["cuda_note"] = "CUDA not available: GPU throughput unmeasured"

    if args.json:
        json.dump(results, sys.stdout)
        print()
    else:
        print_table(results)


if __name__ == "__main__":
    main()
