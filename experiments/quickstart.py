"""Quickstart: a small search on an embedded local Ray, sized for a laptop's CPUs.

python experiments/quickstart.py                 # about 6.5 minutes on 2 CPU cores
python experiments/quickstart.py --smoke-test    # seconds; what the tests run
"""

from tuner import ExperimentConfig, SearchSpace
from tuner.experiment import main

EXPERIMENT = ExperimentConfig(
    name="quickstart",
    storage_path="runs",
    num_samples=14,
    max_concurrent=2,
    cpus_per_trial=1,
    steps_per_iteration=25,
    max_iterations=8,
    grace_period=1,
    reduction_factor=2,
    n_startup_trials=6,
    val_size=512,
    picture_every=2,
)

# Small, cheap networks around the seed's own settings, which every search includes.
SPACE = SearchSpace(
    depth=(2, 8),
    filters=(8, 16),
    kernel_size=(3, 5, 7),
    activation=("relu", "seed"),
    pooling=("none", "max"),
    pool_every=(1, 2),
    norm=("none", "batch"),
    head_width=(64,),
    lr=(1e-4, 1e-2),
    beta2=(0.9, 0.999),
    batch_size=(32, 64),
)

if __name__ == "__main__":
    main(__doc__.split("\n")[0], EXPERIMENT, SPACE)
