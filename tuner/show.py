"""Pictures of a model's predictions on validation images: a PNG grid or a GIF.

Each picture is one image of the fixed validation set with the true circle drawn dark and the
predicted one bright (`data.overlay_circles`), captioned with the IoU of the two discs. The GIF
steps through the pictures one by one, as the seed notebook's animation did.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.figure import Figure

from data import disc_iou, overlay_circles, validation_set
from tuner.export import CircleModel
from tuner.results import ResultsError, writing

__all__ = ["CELL_PIXELS", "FRAME_PIXELS", "prediction_pictures", "save_animation", "save_grid"]

DPI = 100
CELL_PIXELS = 200  # side of one picture's cell in the PNG grid, caption included
FRAME_PIXELS = 300  # side of one GIF frame
FRAME_MS = 700  # the seed notebook's animation interval


def prediction_pictures(model: CircleModel, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` validation images with both circles drawn, and each one's IoU.

    The images are the first of the very set the trials were scored on: `validation_set` with
    the model's circle config and the experiment's `val_size`.

    Returns:
        `pictures` `(count, 1, size, size)` and `iou` `(count,)`.
    """
    val_size = int(model.source.get("val_size", count))
    if not 1 <= count <= val_size:
        raise ResultsError(
            f"count must be between 1 and the validation set's size {val_size}, but got {count}"
        )
    images, labels = validation_set(model.circles, val_size)
    images, labels = images[:count], labels[:count]
    predictions = model.predict(images)  # (count, 3)
    pictures = overlay_circles(images, labels, predictions, model.circles)
    return pictures, disc_iou(predictions, labels)


def _show(axes, picture: torch.Tensor, caption: str) -> None:
    # The image is indexed image[x, y] with x the row, so imshow draws it as the seed did.
    axes.imshow(picture[0].numpy(), cmap="viridis")
    axes.set_title(caption, fontsize=9)
    axes.set_axis_off()


def save_grid(
    pictures: torch.Tensor,
    iou: torch.Tensor,
    path: str | os.PathLike,
    columns: int = 4,
    title: str | None = None,
) -> Path:
    """A PNG of the pictures in rows of `columns`, each `CELL_PIXELS` square."""
    columns = min(columns, len(pictures))
    rows = math.ceil(len(pictures) / columns)
    inches = CELL_PIXELS / DPI
    figure = Figure(figsize=(columns * inches, rows * inches), dpi=DPI)
    grid = figure.subplots(rows, columns, squeeze=False)
    for i, axes in enumerate(grid.flat):
        if i < len(pictures):
            _show(axes, pictures[i], f"IoU {iou[i]:.2f}")
        else:
            axes.set_axis_off()
    top = 1 - 0.3 / (rows * inches)  # room for one line of caption above each row
    if title:
        figure.suptitle(title, fontsize=10 if columns >= 3 else 7)
        top -= 0.25 / (rows * inches)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=top, hspace=0.25)
    with writing(path) as target:
        figure.savefig(target, dpi=DPI, format="png")
    return target


def save_animation(pictures: torch.Tensor, iou: torch.Tensor, path: str | os.PathLike) -> Path:
    """A GIF with one picture per frame, `FRAME_PIXELS` square, `FRAME_MS` apart."""
    inches = FRAME_PIXELS / DPI
    figure = Figure(figsize=(inches, inches), dpi=DPI)
    axes = figure.subplots()
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9)

    def draw(i: int) -> list:
        axes.clear()
        _show(axes, pictures[i], f"{i + 1}/{len(pictures)}  IoU {iou[i]:.2f}")
        return []

    animation = FuncAnimation(figure, draw, frames=len(pictures), interval=FRAME_MS)
    with writing(path) as target:
        animation.save(target, writer=PillowWriter(fps=1000 / FRAME_MS), dpi=DPI)
    return target
