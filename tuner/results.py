"""Reading an experiment directory: each trial's status, last metrics, config and checkpoint.

Everything is read through Ray Tune's own readers (`ExperimentAnalysis`, `ResultGrid`), which
never start Ray, and the resolved `circletune.json`; the Optuna study through
`optuna.load_study`. The same code reads a finished search, one still running (as of Ray's
last saved snapshot) and one that was interrupted.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pyarrow.fs
from ray import tune
from ray.tune import ExperimentAnalysis, ResultGrid

from tuner.config import CONFIG_FILE, METRIC, MODE, STUDY_FILE, STUDY_NAME, ExperimentConfig
from tuner.trainable import SETTINGS

__all__ = [
    "STOPPED",
    "Experiment",
    "ResultsError",
    "TrialResult",
    "describe_counts",
    "load_experiment",
    "load_study",
    "writing",
]

# The status shown for a trial that ended before the experiment's last iteration: ASHA stopped
# it (or the time budget ended the search).
STOPPED = "STOPPED"
_UNFINISHED = ("RUNNING", "PENDING", "PAUSED")


class ResultsError(ValueError):
    """An experiment, trial, checkpoint or file that cannot be used as asked; one sentence."""


@dataclass(frozen=True)
class TrialResult:
    """One trial as the experiment directory records it.

    `status` is Ray's (TERMINATED, ERROR, RUNNING, PENDING, PAUSED), or `STOPPED` for a trial
    that terminated before the experiment's `max_iterations`.
    """

    trial_id: str
    status: str
    params: dict[str, Any]  # the sampled hyperparameters: the config without its settings
    metrics: dict[str, Any]  # the last reported result
    path: str
    checkpoint: tune.Checkpoint | None  # the latest one
    history: pd.DataFrame  # one row per reported iteration
    error: str | None  # the last line of the error, for ERROR trials

    @property
    def iterations(self) -> int:
        return int(self.metrics.get("training_iteration", 0))

    @property
    def val_rmse(self) -> float:
        value = self.metrics.get(METRIC)
        return float(value) if isinstance(value, (int, float)) else math.nan

    @property
    def ranked(self) -> bool:
        """Whether the trial has a finite `val_rmse` to be ranked by."""
        return math.isfinite(self.val_rmse)


@dataclass(frozen=True)
class Experiment:
    """A search's trials, best first, and its resolved config."""

    path: str
    config: ExperimentConfig
    trials: tuple[TrialResult, ...]  # ranked by last val_rmse; unranked ones last
    filesystem: pyarrow.fs.FileSystem

    @property
    def ranked(self) -> list[TrialResult]:
        return [t for t in self.trials if t.ranked]

    def best(self) -> TrialResult:
        ranked = self.ranked
        if not ranked:
            raise ResultsError(
                f"no trial of {self.path} has finished an iteration yet "
                f"({describe_counts(self.counts())})"
            )
        return ranked[0]

    def trial(self, trial_id: str | None) -> TrialResult:
        """The trial `trial_id` (its id or its directory name), or the best one for None."""
        if trial_id is None:
            return self.best()
        wanted = trial_id.removeprefix("trial_")
        for trial in self.trials:
            if trial.trial_id == wanted:
                return trial
        known = ", ".join(t.trial_id for t in self.trials)
        raise ResultsError(f"there is no trial {trial_id!r} in {self.path}; trials: {known}")

    def counts(self) -> dict[str, int]:
        """How many trials finished, stopped early, errored, or are still running or waiting."""
        statuses = [t.status for t in self.trials]
        return {
            "finished": statuses.count("TERMINATED"),
            "stopped_early": statuses.count(STOPPED),
            "errored": statuses.count("ERROR"),
            "running": sum(statuses.count(s) for s in _UNFINISHED),
        }

    def varying_params(self) -> list[str]:
        """Hyperparameters whose value (or presence) differs between trials, sorted."""
        names = sorted({name for t in self.trials for name in t.params})
        return [
            name
            for name in names
            if len({json.dumps(t.params.get(name), sort_keys=True) for t in self.trials}) > 1
        ]


def describe_counts(counts: dict[str, int]) -> str:
    """`counts` in words: "6 trials: 3 finished, ..."."""
    return (
        f"{sum(counts.values())} trials: {counts['finished']} finished, "
        f"{counts['stopped_early']} stopped early, {counts['errored']} errored, "
        f"{counts['running']} still running or waiting"
    )


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read the experiment at `path` (a directory or a storage URI) without starting Ray.

    Raises:
        ResultsError: `path` is not an experiment directory written by a search, or its state
            cannot be read.
    """
    path = str(path)
    if "://" not in path:
        path = str(Path(path).expanduser().resolve())
    if not tune.Tuner.can_restore(path):
        if Path(path, CONFIG_FILE).is_file():
            raise ResultsError(f"the search at {path} has not saved its first trial state yet")
        raise ResultsError(
            f"{path} is not an experiment directory: it holds no Ray Tune experiment state "
            f"(give <storage_path>/<name> of a search)"
        )

    # Ray's reader; it fails this way only on a state file being replaced while read.
    try:
        analysis = ExperimentAnalysis(path)
    except (ValueError, EOFError) as error:
        raise ResultsError(
            f"the experiment state of {path} cannot be read ({_first_line(error)}); "
            f"if the search is running, try again"
        ) from None
    grid = ResultGrid(analysis)
    experiment_path = grid.experiment_path
    config = _read_config(grid.filesystem, experiment_path)

    # Ray's trials carry the status; the ResultGrid's results the rest.
    results = {result.path: result for result in grid}
    trials = []
    for trial in analysis.trials:
        result = results[trial.path]
        metrics = dict(result.metrics or {})
        metrics.pop("config", None)
        status = trial.status
        iterations = int(metrics.get("training_iteration", 0))
        if status == "TERMINATED" and iterations < config.max_iterations:
            status = STOPPED
        history = result.metrics_dataframe
        trials.append(
            TrialResult(
                trial_id=trial.trial_id,
                status=status,
                params={k: v for k, v in trial.config.items() if k != SETTINGS},
                metrics=metrics,
                path=result.path,
                checkpoint=result.checkpoint,
                history=history if history is not None else pd.DataFrame(),
                error=_first_line(result.error, last=True) if result.error else None,
            )
        )

    # Best first, as ResultGrid.get_best_result(METRIC, MODE) picks: ties keep Ray's order.
    sign = 1.0 if MODE == "min" else -1.0
    trials.sort(key=lambda t: (not t.ranked, sign * t.val_rmse if t.ranked else 0.0))
    return Experiment(experiment_path, config, tuple(trials), grid.filesystem)


def _read_config(filesystem: pyarrow.fs.FileSystem, experiment_path: str) -> ExperimentConfig:
    config_path = f"{experiment_path}/{CONFIG_FILE}"
    try:
        with filesystem.open_input_stream(config_path) as stream:
            saved = json.loads(stream.readall())
        return ExperimentConfig.from_dict(saved["experiment"])
    except FileNotFoundError:
        raise ResultsError(
            f"{experiment_path} was not written by circletune: it has no {CONFIG_FILE}"
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise ResultsError(f"{config_path} cannot be read ({_first_line(error)})") from None


def _first_line(error: object, last: bool = False) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if last else lines[0]


@contextlib.contextmanager
def _study_file(experiment: Experiment) -> Iterator[Path]:
    local = Path(experiment.path, STUDY_FILE)
    if isinstance(experiment.filesystem, pyarrow.fs.LocalFileSystem):
        if not local.is_file():
            raise ResultsError(f"{experiment.path} holds no Optuna study ({STUDY_FILE})")
        yield local
        return
    # Object stores: the study is uploaded when the search ends; read a local copy.
    with tempfile.TemporaryDirectory() as directory:
        copy = Path(directory, STUDY_FILE)
        try:
            pyarrow.fs.copy_files(
                f"{experiment.path}/{STUDY_FILE}",
                str(copy),
                source_filesystem=experiment.filesystem,
                destination_filesystem=pyarrow.fs.LocalFileSystem(),
            )
        except FileNotFoundError:
            raise ResultsError(
                f"{experiment.path} holds no Optuna study yet ({STUDY_FILE} is uploaded when "
                f"the search ends)"
            ) from None
        yield copy


@contextlib.contextmanager
def load_study(experiment: Experiment) -> Iterator[optuna.Study]:
    """The experiment's Optuna study, readable while the context lasts."""
    with _study_file(experiment) as study_file:
        try:
            study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{study_file}")
        except KeyError:
            raise ResultsError(f"{study_file} holds no study named {STUDY_NAME!r}") from None
        yield study


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[Path]:
    """Create `path`'s parent folder, and turn a failure to write it into one sentence."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path
    except OSError as error:
        raise ResultsError(f"cannot write {path}: {error.strerror or error}") from None
