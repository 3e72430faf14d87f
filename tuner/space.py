"""The search space: an Optuna define-by-run function over architecture and optimiser.

Architecture parameters that only matter for some choices are asked only then: `pool_every`
only when there is pooling, `head_width` only for the dense head. The seed network's own
settings are always part of the space, so a search can evaluate them as its first trial.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import optuna

from models import ModelConfig, TrainConfig
from models.config import ACTIVATIONS, HEADS, NORMS, POOLINGS

__all__ = ["SEED_PARAMS", "SearchSpace", "configs_from_params", "define_by_run"]

# "seed" is the seed network's per-layer pattern of linear and ReLU convolutions.
SEED_ACTIVATION = "seed"
_SEED_PATTERN = ModelConfig.seed().activations

# The seed network and optimiser expressed as search-space parameters.
SEED_PARAMS: dict[str, Any] = {
    "depth": 8,
    "filters": 16,
    "kernel_size": 7,
    "activation": SEED_ACTIVATION,
    "pooling": "none",
    "norm": "none",
    "head": "subnets",
    "lr": 1e-4,
    "beta1": 0.5,
    "beta2": 0.9,
    "batch_size": 64,
}


@dataclass(frozen=True)
class SearchSpace:
    """What a search may choose. Ranges are `(low, high)`; the other fields list the choices."""

    depth: tuple[int, int] = (2, 8)
    filters: tuple[int, ...] = (8, 16, 32, 64)
    kernel_size: tuple[int, ...] = (3, 5, 7)
    activation: tuple[str, ...] = ("relu", "leaky_relu", "gelu", SEED_ACTIVATION)
    pooling: tuple[str, ...] = ("none", "max", "avg")
    pool_every: tuple[int, ...] = (1, 2, 3)
    norm: tuple[str, ...] = ("none", "batch")
    head: tuple[str, ...] = ("dense", "subnets")
    head_width: tuple[int, ...] = (32, 64, 128)
    lr: tuple[float, float] = (1e-5, 1e-2)
    beta1: tuple[float, float] = (0.5, 0.95)
    beta2: tuple[float, float] = (0.9, 0.9999)
    batch_size: tuple[int, ...] = (32, 64, 128)

    def __post_init__(self) -> None:
        for name, allowed in (
            ("activation", (*ACTIVATIONS, SEED_ACTIVATION)),
            ("pooling", POOLINGS),
            ("norm", NORMS),
            ("head", HEADS),
        ):
            choices = getattr(self, name)
            _check_nonempty(name, choices)
            unknown = [c for c in choices if c not in allowed]
            if unknown:
                raise ValueError(
                    f"search space {name} has unknown choices {unknown}; allowed: {list(allowed)}"
                )
        for name in ("filters", "kernel_size", "pool_every", "head_width", "batch_size"):
            choices = getattr(self, name)
            _check_nonempty(name, choices)
            bad = [c for c in choices if isinstance(c, bool) or not isinstance(c, int) or c < 1]
            if bad:
                raise ValueError(f"search space {name} must hold integers >= 1, but got {bad}")
        even = [k for k in self.kernel_size if k % 2 == 0]
        if even:
            raise ValueError(f"search space kernel_size must hold odd sizes, but got {even}")
        for name, lowest, highest in (
            ("depth", 1, math.inf),
            ("lr", 0, 1),
            ("beta1", 0, 1),
            ("beta2", 0, 1),
        ):
            low, high = getattr(self, name)
            if not (lowest <= low <= high and high < highest) or (name == "lr" and low <= 0):
                raise ValueError(
                    f"search space {name} must be a range (low, high) with {lowest} "
                    f"{'<' if name == 'lr' else '<='} low <= high < {highest}, "
                    f"but got {(low, high)}"
                )

        # The seed trial must be expressible in this space.
        for name, value in SEED_PARAMS.items():
            allowed = getattr(self, name)
            ranged = name in ("depth", "lr", "beta1", "beta2")
            inside = allowed[0] <= value <= allowed[1] if ranged else value in allowed
            if not inside:
                raise ValueError(
                    f"search space {name}={allowed!r} leaves out the seed network's {value!r}; "
                    f"every search evaluates the seed as its first trial, so include it"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown search space keys {unknown}; allowed: {sorted(known)}")
        return cls(**{k: tuple(v) for k, v in data.items()})

    def to_dict(self) -> dict[str, list]:
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}


def _check_nonempty(name: str, choices: tuple) -> None:
    if not isinstance(choices, tuple) or not choices:
        raise ValueError(f"search space {name} must be a non-empty tuple, but got {choices!r}")


def define_by_run(trial: optuna.Trial, space: SearchSpace) -> None:
    """Ask `trial` for one configuration from `space` (Optuna's define-by-run style)."""
    # Architecture.
    trial.suggest_int("depth", *space.depth)
    trial.suggest_categorical("filters", space.filters)
    trial.suggest_categorical("kernel_size", space.kernel_size)
    trial.suggest_categorical("activation", space.activation)
    pooling = trial.suggest_categorical("pooling", space.pooling)
    if pooling != "none":
        trial.suggest_categorical("pool_every", space.pool_every)
    trial.suggest_categorical("norm", space.norm)
    head = trial.suggest_categorical("head", space.head)
    if head == "dense":
        trial.suggest_categorical("head_width", space.head_width)

    # Optimiser.
    trial.suggest_float("lr", *space.lr, log=True)
    trial.suggest_float("beta1", *space.beta1)
    trial.suggest_float("beta2", *space.beta2)
    trial.suggest_categorical("batch_size", space.batch_size)


def configs_from_params(
    params: dict[str, Any], image_size: int = 64, **train_options: Any
) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs a trial's parameters stand for.

    `pool_every` is raised where the sampled value would pool the image below one pixel, so
    every sample from the space is a valid network.
    """
    depth = params["depth"]
    activation = params["activation"]
    if activation == SEED_ACTIVATION:
        activation = tuple(_SEED_PATTERN[i % len(_SEED_PATTERN)] for i in range(depth))
    pool_every = params.get("pool_every", 1)
    max_pools = int(math.log2(image_size))
    if params["pooling"] != "none" and depth // pool_every > max_pools:
        pool_every = math.ceil((depth + 1) / (max_pools + 1))
    model = ModelConfig(
        depth=depth,
        filters=params["filters"],
        kernel_size=params["kernel_size"],
        activation=activation,
        pooling=params["pooling"],
        pool_every=pool_every,
        norm=params["norm"],
        head=params["head"],
        head_width=params.get("head_width", 64),
    )
    train = TrainConfig(
        lr=params["lr"],
        beta1=params["beta1"],
        beta2=params["beta2"],
        batch_size=params["batch_size"],
        **train_options,
    )
    return model, train
