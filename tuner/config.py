"""An experiment's settings besides its search space: budgets, resources, files, names."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data import CircleConfig
from models import TrainConfig

__all__ = [
    "CONFIG_FILE",
    "METRIC",
    "MODE",
    "ORPHANED",
    "RAY_TRIAL_ID",
    "STUDY_FILE",
    "STUDY_NAME",
    "ExperimentConfig",
    "load_experiment_config",
]

METRIC, MODE = "val_rmse", "min"
CONFIG_FILE = "circletune.json"
STUDY_FILE = "optuna.db"
STUDY_NAME = "circletune"
RAY_TRIAL_ID = "ray_trial_id"  # user attribute of each Optuna trial
SNAPSHOT_PERIOD_S = 2
SAMPLERS = ("tpe", "random")
ORPHANED = "orphaned"  # user attribute of trials a crashed driver asked for but never ran


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a search needs besides the search space; saved as `circletune.json`.

    Budgets are counted in iterations: `steps_per_iteration` optimiser steps, then one
    validation pass and one report. ASHA decides at rungs `grace_period * reduction_factor^k`.
    """

    name: str = "circles"
    storage_path: str = "runs"
    num_samples: int = 20
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    time_budget_s: float | None = None
    seed: int = 0
    steps_per_iteration: int = 50
    max_iterations: int = 16
    grace_period: int = 1
    reduction_factor: int = 2
    n_startup_trials: int = 8
    val_size: int = 2048
    max_failures: int = 2
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    picture_every: int = 4
    reuse_actors: bool = True
    sampler: str = "tpe"
    early_stopping: bool = True
    autoscaling: bool = False
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    circles: CircleConfig = field(default_factory=CircleConfig)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name or ""):
            raise ValueError(
                f"name must be letters, digits, '_', '.' or '-' (a directory name), "
                f"but got {self.name!r}"
            )
        for name, minimum in (
            ("num_samples", 1),
            ("max_concurrent", 1),
            ("steps_per_iteration", 1),
            ("max_iterations", 1),
            ("grace_period", 1),
            ("reduction_factor", 2),
            ("n_startup_trials", 0),
            ("max_failures", 0),
            ("checkpoint_every", 1),
            ("keep_checkpoints", 1),
            ("picture_every", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, but got {value!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {list(SAMPLERS)}, but got {self.sampler!r}")
        if self.grace_period > self.max_iterations:
            raise ValueError(
                f"grace_period must be <= max_iterations ({self.max_iterations}), "
                f"but got {self.grace_period}"
            )
        if not (isinstance(self.cpus_per_trial, (int, float)) and self.cpus_per_trial > 0):
            raise ValueError(f"cpus_per_trial must be > 0, but got {self.cpus_per_trial!r}")
        gpus = self.gpus_per_trial
        if not (isinstance(gpus, (int, float)) and gpus >= 0) or (gpus > 1 and gpus % 1):
            raise ValueError(
                f"gpus_per_trial must be 0, a fraction in (0, 1] or a whole number, "
                f"but got {gpus!r}"
            )
        if self.time_budget_s is not None and not (
            isinstance(self.time_budget_s, (int, float))
            and math.isfinite(self.time_budget_s)
            and self.time_budget_s > 0
        ):
            raise ValueError(f"time_budget_s must be > 0 seconds, but got {self.time_budget_s!r}")
        self.train_options()  # checks precision, val_size and the rest now, not in a trial

    def train_options(self) -> dict[str, Any]:
        """The `TrainConfig` fields that are fixed for the whole experiment."""
        options = {
            "val_size": self.val_size,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
        }
        TrainConfig(**options)
        return options

    def settings(self) -> dict[str, Any]:
        """What every trial receives besides its sampled parameters."""
        return {
            "circles": dataclasses.asdict(self.circles),
            "train": self.train_options(),
            "seed": self.seed,
            "steps_per_iteration": self.steps_per_iteration,
            "max_iterations": self.max_iterations,
            "checkpoint_every": self.checkpoint_every,
            "picture_every": self.picture_every,
        }

    @property
    def is_uri(self) -> bool:
        return "://" in self.storage_path

    @property
    def experiment_path(self) -> str:
        if self.is_uri:
            return f"{self.storage_path.rstrip('/')}/{self.name}"
        return str(Path(self.storage_path).expanduser().resolve() / self.name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown experiment keys {unknown}; allowed: {sorted(known)}")
        if "circles" in data:
            data["circles"] = CircleConfig(**data["circles"])
        return cls(**data)


def load_experiment_config(path: str | os.PathLike) -> ExperimentConfig:
    """The experiment config saved in the experiment directory `path`."""
    saved = json.loads(Path(path, CONFIG_FILE).read_text())
    return ExperimentConfig.from_dict(saved["experiment"])
