"""Training one regressor with Adam on freshly generated batches, with no scheduler involved.

The search's trainable drives a `Trainer` iteration by iteration; `train` runs one to the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from data import CircleConfig, disc_iou, make_batch, rmse, validation_set
from models.config import ModelConfig
from models.regressor import ConvRegressor

__all__ = ["TrainConfig", "Trainer", "train"]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """How a regressor is trained and scored. The optimiser defaults are the seed's.

    Args:
        lr, beta1, beta2: Adam's learning rate and decay rates.
        batch_size: training images per optimiser step.
        val_size: images in the fixed validation set.
        precision: `fp32`, or `bf16` autocast (CUDA only; the CPU always runs fp32).
        channels_last: channels-last memory format for the convolutions (CUDA only).
        compile: wrap the model in `torch.compile`.
    """

    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    batch_size: int = 64
    val_size: int = 2048
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ValueError(f"lr must be in (0, 1), but got {self.lr!r}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ValueError(f"{name} must be in [0, 1), but got {value!r}")
        for name in ("batch_size", "val_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, but got {value!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {list(PRECISIONS)}, but got {self.precision!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Trainer:
    """One model, its Adam optimiser and its own stream of training batches on `device`.

    Training batches are generated on `device` from `seed`; validation always uses the fixed
    CPU-generated set, moved to `device` once. The step loop never waits on the device: the loss
    is summed on the device and read once per `train_steps` call.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig = TrainConfig(),
        circles: CircleConfig = CircleConfig(),
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        self.model_config = model_config
        self.train_config = train_config
        self.circles = circles
        self.device = torch.device(device)
        self.step = 0
        self.samples_per_s = float("nan")

        with torch.random.fork_rng(devices=[]):  # seeds the weights, leaves global RNG alone
            torch.manual_seed(seed)
            self.model = ConvRegressor(model_config, circles.image_size).to(self.device)
        self.cuda = self.device.type == "cuda"
        self.memory_format = (
            torch.channels_last if self.cuda and train_config.channels_last else None
        )
        if self.memory_format is not None:
            self.model = self.model.to(memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=train_config.lr,
            betas=(train_config.beta1, train_config.beta2),
        )
        self.forward: nn.Module = torch.compile(self.model) if train_config.compile else self.model
        self.generator = torch.Generator(self.device).manual_seed(seed)

        val_images, val_labels = validation_set(circles, train_config.val_size)
        self.val_images = self._prepare(val_images.to(self.device))
        self.val_labels = val_labels.to(self.device)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if self.memory_format is None:
            return images
        return images.contiguous(memory_format=self.memory_format)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cuda and self.train_config.precision == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_steps(self, steps: int) -> float:
        """Run `steps` optimiser steps; return their mean loss (MSE over x, y and r)."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        start = time.perf_counter()
        for _ in range(steps):
            images, labels = make_batch(
                self.train_config.batch_size, self.circles, self.generator, self.device
            )
            with self._autocast():
                predictions = self.forward(self._prepare(images))
            loss = nn.functional.mse_loss(predictions.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach()
        mean_loss = loss_sum.item() / steps  # the only sync per call
        self.samples_per_s = steps * self.train_config.batch_size / (time.perf_counter() - start)
        self.step += steps
        if not math.isfinite(mean_loss):
            raise FloatingPointError(
                f"train_loss became {mean_loss} by step {self.step} "
                f"(lr={self.train_config.lr:g}); the model diverged"
            )
        return mean_loss

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """`(batch, 3)` float32 predictions `(x, y, r)` for `(batch, 1, size, size)` images."""
        self.model.eval()
        outputs = []
        for chunk in images.split(batch_size):
            with self._autocast():
                outputs.append(self.forward(self._prepare(chunk.to(self.device))).float())
        return torch.cat(outputs)

    def evaluate(self) -> dict[str, float]:
        """Metrics of DESIGN.md on the fixed validation set."""
        predictions = self.predict(self.val_images)
        errors = rmse(predictions, self.val_labels)
        iou = disc_iou(predictions, self.val_labels)
        return {
            "val_rmse": errors["rmse"],
            "val_rmse_x": errors["rmse_x"],
            "val_rmse_y": errors["rmse_y"],
            "val_rmse_r": errors["rmse_r"],
            "val_iou": iou.mean().item(),
            "val_iou90": (iou >= 0.9).double().mean().item(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimiser, data stream and step."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.step = int(state["step"])


def train(
    model_config: ModelConfig,
    train_config: TrainConfig = TrainConfig(),
    steps: int = 400,
    device: torch.device | str = "cpu",
    seed: int = 0,
    circles: CircleConfig = CircleConfig(),
    log_every: int = 0,
) -> dict[str, float]:
    """Train one config for `steps` Adam steps and return its validation metrics.

    The result also holds `train_loss` (mean loss of the last `log_every` steps, or of all
    steps) and `samples_per_s`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, but got {steps!r}")
    trainer = Trainer(model_config, train_config, circles, device, seed)
    chunk = log_every if log_every > 0 else steps
    elapsed, train_loss = 0.0, float("nan")
    while trainer.step < steps:
        n = min(chunk, steps - trainer.step)
        train_loss = trainer.train_steps(n)
        elapsed += n * train_config.batch_size / trainer.samples_per_s
        logger.info("step %d: train_loss %.3f", trainer.step, train_loss)
    metrics = trainer.evaluate()
    metrics["train_loss"] = train_loss
    metrics["samples_per_s"] = steps * train_config.batch_size / elapsed
    return metrics
