"""The Ray Tune trainable: one trial trains one sampled configuration.

Per iteration the trial runs a fixed number of optimiser steps, scores the fixed validation set
and reports the metrics with a checkpoint. A trial restarted by Ray continues from its last
checkpoint; a loss that turns NaN or infinite ends the trial as an error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from data import CircleConfig, colour_grid, overlay_circles
from models import Trainer
from tuner.board import TrialBoard
from tuner.space import configs_from_params

__all__ = ["CHECKPOINT_FILE", "SETTINGS", "load_checkpoint", "train_circles"]

logger = logging.getLogger(__name__)

# The key under which a trial's config carries the experiment's fixed settings; every other
# key is a sampled hyperparameter.
SETTINGS = "settings"
CHECKPOINT_FILE = "state.pt"
MODEL_FILE = "model.json"
_DIVERGED = "diverged.txt"
_PICTURE_IMAGES = 8


def _choose_device(cpus: float, gpus: float) -> torch.device:
    if gpus > 0 and torch.cuda.is_available():
        # Ray limits CUDA_VISIBLE_DEVICES to the trial's GPU, so it is always device 0 here.
        return torch.device("cuda", 0)
    # Several trials share a node's cores: torch must not spread one trial over all of them.
    torch.set_num_threads(max(1, int(cpus)))
    return torch.device("cpu")


def save_checkpoint(directory: str, trainer: Trainer, iteration: int) -> None:
    torch.save({**trainer.state_dict(), "iteration": iteration}, Path(directory, CHECKPOINT_FILE))
    model = {
        "model": trainer.model_config.to_dict(),
        "train": trainer.train_config.to_dict(),
        "circles": dataclasses.asdict(trainer.circles),
    }
    Path(directory, MODEL_FILE).write_text(json.dumps(model, indent=1))


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state and the configs stored in a trial checkpoint directory."""
    state = torch.load(Path(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    configs = json.loads(Path(directory, MODEL_FILE).read_text())
    return state, configs


def train_circles(config: dict[str, Any]) -> None:
    """Function trainable: `config` holds sampled parameters and the fixed `settings`."""
    settings = config[SETTINGS]
    params = {k: v for k, v in config.items() if k != SETTINGS}
    context = tune.get_context()
    resources = context.get_trial_resources().required_resources
    device = _choose_device(resources.get("CPU", 1), resources.get("GPU", 0))
    trial_dir = Path(context.get_trial_dir())
    if (trial_dir / _DIVERGED).exists():
        # A retry would only diverge again from the same checkpoint.
        raise FloatingPointError((trial_dir / _DIVERGED).read_text())

    # Build data and model.
    circles = CircleConfig(**settings["circles"])
    model_config, train_config = configs_from_params(
        params, circles.image_size, **settings["train"]
    )
    trainer = Trainer(model_config, train_config, circles, device, seed=settings["seed"])
    iteration = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state, _ = load_checkpoint(directory)
        trainer.load_state_dict(state)
        iteration = int(state["iteration"])
        logger.info("%s resumes at iteration %d", context.get_trial_id(), iteration)

    node_id = ray.get_runtime_context().get_node_id()
    board = TrialBoard(str(trial_dir), params)
    try:
        while iteration < settings["max_iterations"]:
            # Train.
            try:
                train_loss = trainer.train_steps(settings["steps_per_iteration"])
            except FloatingPointError as error:
                (trial_dir / _DIVERGED).write_text(str(error))
                raise
            iteration += 1

            # Evaluate, draw, report.
            metrics = trainer.evaluate()
            metrics.update(
                train_loss=train_loss,
                samples_per_s=trainer.samples_per_s,
                step=trainer.step,
                node_id=node_id,
                device=str(device),
            )
            board.log(metrics, iteration)
            last = iteration == settings["max_iterations"]
            if last or iteration % settings["picture_every"] == 0:
                board.picture(_prediction_grid(trainer), iteration)
            if last or iteration % settings["checkpoint_every"] == 0:
                with tempfile.TemporaryDirectory() as directory:
                    save_checkpoint(directory, trainer, iteration)
                    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
            else:
                tune.report(metrics)
    finally:
        board.close()


def _prediction_grid(trainer: Trainer) -> np.ndarray:
    """Eight validation images, true circle dark and predicted bright, as one RGB grid."""
    images = trainer.val_images[:_PICTURE_IMAGES]
    labels = trainer.val_labels[:_PICTURE_IMAGES]
    pictures = overlay_circles(images, labels, trainer.predict(images), trainer.circles)
    return colour_grid(pictures)
