"""Pictures of predictions: the true circle dark, the predicted one bright, as the seed drew."""

from __future__ import annotations

import numpy as np
import torch

from data.circles import CircleConfig, draw_circles

__all__ = ["colour_grid", "overlay_circles"]


def overlay_circles(
    images: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor,
    config: CircleConfig = CircleConfig(),
) -> torch.Tensor:
    """Copies of `images` `(batch, 1, size, size)` with both circles drawn on them.

    Both circles are rounded to whole pixels and drawn with `config`'s rings: the labelled one
    darkened, the predicted one brightened by the same amount.
    """
    pictures = images.detach().float().cpu().clone().contiguous()
    draw_circles(pictures, labels.detach().double().cpu().round(), config)
    predicted = predictions.detach().double().cpu().round()
    predicted[:, 2] = predicted[:, 2].clamp(min=0)
    draw_circles(pictures, predicted, config, darkness=-config.darkness)
    return pictures


def colour_grid(pictures: torch.Tensor, columns: int = 4, pad: int = 2) -> np.ndarray:
    """Tile `(batch, 1, size, size)` pictures into one `(3, H, W)` float RGB array in [0, 1].

    Each picture is stretched to its own range and coloured with viridis, the seed's colour map.
    """
    from matplotlib import colormaps

    batch, _, size, _ = pictures.shape
    rows = -(-batch // columns)
    grid = np.ones((rows * (size + pad) + pad, columns * (size + pad) + pad, 3), np.float32)
    viridis = colormaps["viridis"]
    for i, picture in enumerate(pictures[:, 0].numpy()):
        low, high = picture.min(), picture.max()
        scaled = (picture - low) / max(high - low, 1e-6)
        top, left = pad + (i // columns) * (size + pad), pad + (i % columns) * (size + pad)
        grid[top : top + size, left : left + size] = viridis(scaled)[..., :3]
    return grid.transpose(2, 0, 1)
