"""Trained models outside the search: from a trial's checkpoint, to a file of their own, and
their predictions.

An exported model is one `torch.save` file of plain data: the weights, the `ModelConfig` and the
`CircleConfig` it was trained on. It loads with `torch.load(..., weights_only=True)` and needs
torch and `models` only, not Ray or Optuna:

    saved = torch.load("model.pt", weights_only=True)
    network = ConvRegressor(ModelConfig.from_dict(saved["model"]), saved["circles"]["image_size"])
    network.load_state_dict(saved["state_dict"])

TorchScript would drop even the `models` import, but `torch.jit` is deprecated in torch 2.13 and
cannot script `ConvRegressor` (its config is a dataclass), so weights plus config it is.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune

from data import CircleConfig
from models import ConvRegressor, ModelConfig
from tuner.results import ResultsError, writing
from tuner.trainable import load_checkpoint

__all__ = ["FORMAT", "CircleModel", "from_checkpoint", "load_images", "load_model"]

FORMAT = "circletune-model"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CircleModel:
    """A trained regressor, the circles it was trained on, and where it came from."""

    network: ConvRegressor
    circles: CircleConfig
    source: dict[str, Any]  # experiment, trial_id, checkpoint, iteration, val_size

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """`(batch, 3)` float32 rows `(x, y, r)` for `(batch, 1, size, size)` images."""
        self.network.eval()
        return torch.cat([self.network(chunk.float()) for chunk in images.split(batch_size)])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the stand-alone model file (see the module's docstring)."""
        saved = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": self.network.config.to_dict(),
            "circles": dataclasses.asdict(self.circles),
            "state_dict": self.network.state_dict(),
            "source": self.source,
        }
        with writing(path) as target:
            torch.save(saved, target)
        return target


def _build(
    model: dict[str, Any], circles: dict[str, Any], weights: dict[str, Any]
) -> tuple[ConvRegressor, CircleConfig]:
    circle_config = CircleConfig(**circles)
    network = ConvRegressor(ModelConfig.from_dict(model), circle_config.image_size)
    network.load_state_dict(weights)
    return network.eval(), circle_config


def from_checkpoint(checkpoint: tune.Checkpoint, source: dict[str, Any]) -> CircleModel:
    """The model saved in a trial checkpoint (`state.pt` and `model.json`).

    Raises:
        ResultsError: the checkpoint is gone, corrupt, or does not match its config.
    """
    with checkpoint.as_directory() as directory:
        try:
            state, configs = load_checkpoint(directory)
        except FileNotFoundError as error:
            raise ResultsError(
                f"checkpoint {checkpoint.path} has no {Path(error.filename or '?').name} "
                f"(a running trial may have replaced it; try again)"
            ) from None
        except Exception as error:
            # A damaged file makes torch's weights-only unpickler (or json) fail in many ways;
            # weights_only=True means none of them ran code from the file.
            raise ResultsError(
                f"checkpoint {checkpoint.path} is corrupt and cannot be loaded "
                f"({type(error).__name__})"
            ) from None
    try:
        network, circles = _build(configs["model"], configs["circles"], state["model"])
        val_size = int(configs["train"]["val_size"])
        iteration = int(state["iteration"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ResultsError(
            f"checkpoint {checkpoint.path} does not hold a model matching its config "
            f"({type(error).__name__})"
        ) from None
    return CircleModel(
        network,
        circles,
        {
            **source,
            "checkpoint": checkpoint.path,
            "iteration": iteration,
            "val_size": val_size,
        },
    )


def load_model(path: str | os.PathLike) -> CircleModel:
    """A model written by `CircleModel.save`, loaded with `weights_only=True`.

    Raises:
        ResultsError: the file is missing, corrupt, or not a circletune model.
    """
    try:
        saved = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ResultsError(f"there is no model file {path}") from None
    except IsADirectoryError:
        raise ResultsError(f"{path} is a directory, not a model file") from None
    except Exception as error:
        # As for checkpoints: a damaged file fails in many ways, none of which ran its code.
        raise ResultsError(
            f"{path} is not a model file or is corrupt ({type(error).__name__})"
        ) from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ResultsError(f"{path} is not a circletune model (write one with circletune export)")
    if saved.get("version") != FORMAT_VERSION:
        raise ResultsError(
            f"{path} is a circletune model of version {saved.get('version')!r}; "
            f"this circletune reads version {FORMAT_VERSION}"
        )
    try:
        network, circles = _build(saved["model"], saved["circles"], saved["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ResultsError(
            f"{path} does not hold a model matching its config ({type(error).__name__})"
        ) from None
    return CircleModel(network, circles, dict(saved.get("source", {})))


def load_images(path: str | os.PathLike, image_size: int) -> torch.Tensor:
    """Float images from a `.npy` file of shape `(N, size, size)` or `(N, 1, size, size)`.

    Raises:
        ResultsError: the file cannot be read as a NumPy array, or has the wrong shape or type.
    """
    try:
        images = np.load(Path(path), allow_pickle=False)
    except FileNotFoundError:
        raise ResultsError(f"there is no images file {path}") from None
    except (OSError, ValueError, EOFError) as error:
        raise ResultsError(f"{path} cannot be read as a .npy array ({error})") from None
    if not isinstance(images, np.ndarray):
        raise ResultsError(f"{path} is a zip archive (like .npz), not one .npy array")
    size, shape = image_size, images.shape
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1:] != (1, size, size) or len(images) == 0:
        raise ResultsError(
            f"images must have shape (N, {size}, {size}) or (N, 1, {size}, {size}) with N >= 1, "
            f"but {path} holds {shape}"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise ResultsError(f"images must be floats, but {path} holds {images.dtype}")
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))  # (N, 1, size, size)
