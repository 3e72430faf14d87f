"""The full search, sized for GPU workers: hundreds of trials, four to a GPU.

    python experiments/circles_asha.py --address auto --storage-path /mnt/shared/circletune
    python experiments/circles_asha.py --smoke-test   # the same script, tiny, on this machine

Each iteration is 100 Adam steps; ASHA first judges a trial after 2 iterations and keeps the
best half at each rung (2, 4, 8, 16, 32), so a trial that runs to the end has seen 3,200 steps.
"""

from tuner import ExperimentConfig, SearchSpace
from tuner.experiment import main

EXPERIMENT = ExperimentConfig(
    name="circles_asha",
    storage_path="runs",
    num_samples=400,
    max_concurrent=32,
    cpus_per_trial=2,
    # Four trials share one GPU. A first guess for these small networks: benchmarks/gpu_packing.py
    # measures 1, 2, 4 and 8 per GPU, but has not run on a GPU yet (README, limits).
    gpus_per_trial=0.25,
    steps_per_iteration=100,
    max_iterations=32,
    grace_period=2,
    reduction_factor=2,
    n_startup_trials=16,
    val_size=2048,
    checkpoint_every=2,
    picture_every=8,
    precision="bf16",
    channels_last=True,
)

SPACE = SearchSpace(
    depth=(2, 10),
    filters=(8, 16, 32, 64),
    kernel_size=(3, 5, 7),
    activation=("relu", "leaky_relu", "gelu", "silu", "seed"),
    pooling=("none", "max", "avg"),
    pool_every=(1, 2, 3),
    norm=("none", "batch"),
    head=("dense", "subnets"),
    head_width=(32, 64, 128, 256),
    lr=(1e-5, 3e-2),
    beta1=(0.5, 0.95),
    beta2=(0.9, 0.9999),
    batch_size=(32, 64, 128, 256),
)

# On a CPU-only machine the smoke test must not ask for a GPU.
SMOKE = {
    "num_samples": 4,
    "max_concurrent": 2,
    "cpus_per_trial": 1,
    "gpus_per_trial": 0,
    "steps_per_iteration": 2,
    "max_iterations": 2,
    "grace_period": 1,
    "n_startup_trials": 2,
    "val_size": 64,
    "checkpoint_every": 1,
    "picture_every": 1,
}

if __name__ == "__main__":
    main(__doc__.split("\n")[0], EXPERIMENT, SPACE, smoke=SMOKE)
