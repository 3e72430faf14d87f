"""Synthetic circles in noise: the generator, the fixed validation set and the metrics."""

from data.circles import CircleConfig, draw_circles, make_batch, random_circles, validation_set
from data.metrics import disc_iou, rmse

__all__ = [
    "CircleConfig",
    "disc_iou",
    "draw_circles",
    "make_batch",
    "random_circles",
    "rmse",
    "validation_set",
]
