"""TensorBoard files written by each trial into its own directory.

Each trial writes its curves, its hyperparameters for the HParams view and pictures of its
predictions next to its results. Writing from inside the trial (not from the driver) means the
pictures can be drawn where the model lives; Ray's artifact sync carries the files to the
experiment directory from whichever node ran the trial.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

__all__ = ["CURVES", "TrialBoard"]

# Scalars drawn as curves; the HParams view lists the first ones against each trial's settings.
CURVES = (
    "val_rmse",
    "val_rmse_x",
    "val_rmse_y",
    "val_rmse_r",
    "val_iou",
    "val_iou90",
    "train_loss",
    "samples_per_s",
)


class TrialBoard:
    """One trial's TensorBoard writer."""

    def __init__(self, log_dir: str, params: dict[str, Any]) -> None:
        self.writer = SummaryWriter(log_dir=log_dir)
        # Announce the hyperparameters and metric names now, so the HParams view shows running
        # trials too; the metric values come from the curves' scalars of the same names.
        hparam_values = {k: v for k, v in params.items() if isinstance(v, (int, float, str))}
        experiment, start, self._end = hparams(hparam_values, {name: 0.0 for name in CURVES[:6]})
        for summary in (experiment, start):
            self.writer.file_writer.add_summary(summary)

    def log(self, metrics: dict[str, float], iteration: int) -> None:
        for name in CURVES:
            if name in metrics:
                self.writer.add_scalar(name, metrics[name], iteration)
        self.writer.flush()

    def picture(self, grid: np.ndarray, iteration: int) -> None:
        """`grid`: `(3, H, W)` RGB in [0, 1], true circles dark and predicted ones bright."""
        self.writer.add_image("val_predictions", grid, iteration)
        self.writer.flush()

    def close(self) -> None:
        self.writer.file_writer.add_summary(self._end)
        self.writer.close()
