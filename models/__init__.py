"""The circle regressor, its config, and training it without any scheduler."""

from models.config import ModelConfig
from models.regressor import ConvRegressor
from models.training import TrainConfig, Trainer, train

__all__ = ["ConvRegressor", "ModelConfig", "TrainConfig", "Trainer", "train"]
