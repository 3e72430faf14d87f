"""A convolutional regressor from images to circle `(x, y, r)`."""

from __future__ import annotations

import torch
from torch import nn

from models.config import ModelConfig

__all__ = ["ConvRegressor"]

# The seed's dense layers use TensorFlow's leaky ReLU, whose negative slope is 0.2.
_HEAD_SLOPE = 0.2


def _activation(name: str) -> nn.Module:
    return {
        "none": nn.Identity,
        "relu": nn.ReLU,
        "leaky_relu": lambda: nn.LeakyReLU(_HEAD_SLOPE),
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "elu": nn.ELU,
        "tanh": nn.Tanh,
    }[name]()


class _Subnet(nn.Module):
    """Four 16-unit leaky-ReLU layers on one slice of the features; their units are summed."""

    def __init__(self, start: int, width: int) -> None:
        super().__init__()
        self.start, self.width = start, width
        layers: list[nn.Module] = []
        for fan_in in (width, 16, 16, 16):
            layers += [nn.Linear(fan_in, 16), nn.LeakyReLU(_HEAD_SLOPE)]
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        part = features[:, self.start : self.start + self.width]
        return self.layers(part).sum(dim=1)  # (batch,)


class ConvRegressor(nn.Module):
    """'Same' convolutions, optional pooling, then a head that predicts `(x, y, r)` in pixels.

    Args:
        config: the architecture.
        image_size: side of the square input; the flat feature size follows from it.
    """

    def __init__(self, config: ModelConfig, image_size: int = 64) -> None:
        super().__init__()
        self.config = config
        side = config.feature_size(image_size)

        # Feature extractor.
        layers: list[nn.Module] = []
        channels = 1
        for i, activation in enumerate(config.activations):
            batch_norm = config.norm == "batch"
            layers.append(
                nn.Conv2d(
                    channels,
                    config.filters,
                    config.kernel_size,
                    padding=config.kernel_size // 2,
                    bias=not batch_norm,
                )
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(config.filters))
            layers.append(_activation(activation))
            channels = config.filters
            if config.pooling != "none" and (i + 1) % config.pool_every == 0:
                pool = nn.MaxPool2d if config.pooling == "max" else nn.AvgPool2d
                layers.append(pool(2))
        self.features = nn.Sequential(*layers)
        flat = channels * side * side

        # Head.
        if config.head == "dense":
            self.head: nn.Module = nn.Sequential(
                nn.Linear(flat, config.head_width),
                nn.LeakyReLU(_HEAD_SLOPE),
                nn.Linear(config.head_width, 3),
            )
        else:
            third = flat // 3
            self.subnets = nn.ModuleList(_Subnet(i * third, third) for i in (0, 1, 2, 1))
        self._init_weights()

    def _init_weights(self) -> None:
        # Glorot-uniform weights and zero biases, TensorFlow's defaults, so the seed preset
        # starts where the seed network started.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images)  # (batch, filters, side, side)
        # Flatten channels-last, as TensorFlow did, so the seed head's thirds cut the same
        # features: each third sees one band of image rows.
        flat = features.permute(0, 2, 3, 1).flatten(1)  # (batch, side * side * filters)
        if self.config.head == "dense":
            return self.head(flat)  # (batch, 3)
        x, y1, r, y2 = (subnet(flat) for subnet in self.subnets)
        return torch.stack([x, (y1 + y2) / 2, r], dim=1)  # (batch, 3)
