"""Ray Tune search over circle regressors: the trainable, the search space, the Tuner.

The only package of circletune that imports Ray.
"""

from tuner.config import METRIC, MODE, ExperimentConfig
from tuner.scheduler import SuccessiveHalving
from tuner.search import build_tuner, run_search
from tuner.searcher import PruningOptunaSearch
from tuner.space import SEED_PARAMS, SearchSpace, configs_from_params, define_by_run
from tuner.trainable import load_checkpoint, train_circles

__all__ = [
    "METRIC",
    "MODE",
    "SEED_PARAMS",
    "ExperimentConfig",
    "PruningOptunaSearch",
    "SearchSpace",
    "SuccessiveHalving",
    "build_tuner",
    "configs_from_params",
    "define_by_run",
    "load_checkpoint",
    "run_search",
    "train_circles",
]
