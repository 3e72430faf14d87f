"""The regressor's architecture as a frozen, validated config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["ACTIVATIONS", "HEADS", "NORMS", "POOLINGS", "ModelConfig"]

ACTIVATIONS = ("none", "relu", "leaky_relu", "gelu", "silu", "elu", "tanh")
POOLINGS = ("none", "max", "avg")
NORMS = ("none", "batch")
HEADS = ("dense", "subnets")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a `ConvRegressor`.

    Args:
        depth: number of 'same' convolutions.
        filters: output channels of every convolution.
        kernel_size: odd side of every convolution kernel.
        activation: one name for every convolution, or one name per convolution.
        pooling: 2 x 2 pooling, stride 2, after every `pool_every` convolutions.
        pool_every: how many convolutions between two poolings.
        norm: normalisation after each convolution, before its activation.
        head: `dense` (one hidden layer of `head_width` units) or `subnets` (the seed's head:
            the flat features cut in thirds, one stack of four 16-unit layers per output, whose
            units are summed; y averages two such stacks).
        head_width: hidden units of the dense head.
    """

    depth: int = 4
    filters: int = 16
    kernel_size: int = 5
    activation: str | tuple[str, ...] = "relu"
    pooling: str = "max"
    pool_every: int = 1
    norm: str = "none"
    head: str = "dense"
    head_width: int = 64

    def __post_init__(self) -> None:
        _check_int("depth", self.depth, 1)
        _check_int("filters", self.filters, 1)
        _check_int("kernel_size", self.kernel_size, 1)
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd so that 'same' padding is symmetric, "
                f"but got {self.kernel_size}"
            )
        _check_int("pool_every", self.pool_every, 1)
        _check_int("head_width", self.head_width, 1)
        if isinstance(self.activation, list):
            object.__setattr__(self, "activation", tuple(self.activation))
        names = self.activations
        if len(names) != self.depth:
            raise ValueError(
                f"activation must be one name or {self.depth} names (one per convolution), "
                f"but got {len(names)}: {self.activation!r}"
            )
        for name in names:
            _check_choice("activation", name, ACTIVATIONS)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("head", self.head, HEADS)

    @property
    def activations(self) -> tuple[str, ...]:
        """The activation of each convolution."""
        if isinstance(self.activation, str):
            return (self.activation,) * self.depth
        return tuple(self.activation)

    @property
    def num_pools(self) -> int:
        return 0 if self.pooling == "none" else self.depth // self.pool_every

    def feature_size(self, image_size: int) -> int:
        """Side of the feature map after the convolutions; raises if pooling empties it."""
        side = image_size
        for _ in range(self.num_pools):
            side //= 2
        if side < 1:
            raise ValueError(
                f"pooling={self.pooling!r} every {self.pool_every} of {self.depth} convolutions "
                f"halves a {image_size}-pixel image {self.num_pools} times, below 1 pixel; "
                f"allowed: at most {image_size.bit_length() - 1} poolings"
            )
        return side

    @classmethod
    def seed(cls) -> ModelConfig:
        """The seed notebook's network: 1,490,128 parameters on 64 x 64 images."""
        return cls(
            depth=8,
            filters=16,
            kernel_size=7,
            activation=("none", "none", "relu", "relu", "relu", "none", "none", "relu"),
            pooling="none",
            norm="none",
            head="subnets",
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if isinstance(self.activation, tuple):
            data["activation"] = list(self.activation)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; allowed: {sorted(known)}")
        return cls(**data)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, but got {value!r}")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, but got {value!r}")
