"""Synthetic circles in noise: the generator, the fixed validation set and the metrics."""

from data.circles import CircleConfig, draw_circles, make_batch, random_circles, validation_set
from data.metrics import disc_iou, rmse
from data.pictures import colour_grid, overlay_circles

__all__ = [
    "CircleConfig",
    "colour_grid",
    "disc_iou",
    "draw_circles",
    "make_batch",
    "overlay_circles",
    "random_circles",
    "rmse",
    "validation_set",
]
