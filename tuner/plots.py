"""Plots of a whole search: optimisation history, learning curves, parallel coordinates and
hyperparameter importance.

The history, parallel-coordinates and importance plots are Optuna's own matplotlib views of the
experiment's study; they see the study's COMPLETE trials, which are the ones that ran all their
iterations (ASHA's stopped trials are PRUNED there). The learning curves come from every Ray
trial's reported results, stopped ones included.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
from matplotlib.figure import Figure
from optuna.exceptions import ExperimentalWarning
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.trial import TrialState
from optuna.visualization import matplotlib as optuna_plots

from tuner.config import METRIC
from tuner.results import STOPPED, Experiment, writing

__all__ = [
    "MIN_IMPORTANCE_TRIALS",
    "PLOT_FILES",
    "Plot",
    "importance_plot",
    "learning_curves",
    "write_plots",
]

PLOT_FILES = (
    "history.png",
    "learning_curves.png",
    "parallel_coordinate.png",
    "importance.png",
)
DPI = 100

# Fewer complete trials than this give importances that are noise, so the plot says so instead.
MIN_IMPORTANCE_TRIALS = 10
# PED-ANOVA compares the best trials with all of them; its authors advise five or more best.
_MIN_TOP_TRIALS = 5


@dataclass(frozen=True)
class Plot:
    path: Path
    note: str | None = None  # why the plot shows a message instead of data


def _note_figure(title: str, note: str) -> Figure:
    figure = Figure(figsize=(6.4, 3.2), dpi=DPI)
    axes = figure.subplots()
    axes.set_axis_off()
    axes.set_title(title)
    axes.text(0.5, 0.5, note, ha="center", va="center", wrap=True, transform=axes.transAxes)
    return figure


def _save(figure: Figure, path: Path) -> None:
    with writing(path) as target:
        figure.savefig(target, dpi=DPI, format="png", bbox_inches="tight")


def _save_optuna(axes, path: Path, width: float | None = None) -> None:
    figure = axes.figure
    if width is not None:
        figure.set_size_inches(width, figure.get_size_inches()[1])
    try:
        _save(figure, path)
    finally:
        plt.close(figure)  # Optuna draws through pyplot, which keeps every figure otherwise


def learning_curves(experiment: Experiment) -> Figure:
    """val_rmse against iteration for every trial, the best drawn bold."""
    best = experiment.ranked[0].trial_id if experiment.ranked else None
    figure = Figure(figsize=(8, 5), dpi=DPI)
    axes = figure.subplots()
    for trial in reversed(experiment.trials):  # the best is drawn last, on top
        history = trial.history
        if history.empty or METRIC not in history:
            continue
        history = history.sort_values("training_iteration")
        x, y = history["training_iteration"], history[METRIC]
        if trial.trial_id == best:
            axes.plot(x, y, "o-", color="tab:red", lw=2.5, zorder=3, label=f"best: {best}")
        else:
            axes.plot(x, y, "-", color="tab:blue", lw=1, alpha=0.5)
            if trial.status in (STOPPED, "ERROR"):
                axes.plot(x.iloc[-1:], y.iloc[-1:], "x", color="tab:blue", alpha=0.7)
    axes.plot([], [], "x", color="tab:blue", label="stopped early or errored")
    axes.set_xlabel("iteration")
    axes.set_ylabel(f"{METRIC} (pixels)")
    axes.set_title(f"Learning curves of {len(experiment.trials)} trials")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def _varying(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    names = sorted({name for t in trials for name in t.params})
    return [n for n in names if len({repr(t.params.get(n)) for t in trials}) > 1]


def importance_plot(study: optuna.Study, complete: list, path: Path) -> str | None:
    title = "Hyperparameter importance"
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        note = (
            f"importance needs at least {MIN_IMPORTANCE_TRIALS} complete trials, but the study "
            f"has {len(complete)} (trials stopped early by ASHA are pruned, not complete)"
        )
        _save(_note_figure(title, note.replace("(", "\n(")), path)
        return note

    # PED-ANOVA rates each parameter, conditional ones included, by how differently it is
    # distributed among the best trials; the best are a top quantile holding at least five.
    quantile = min(0.5, max(0.1, _MIN_TOP_TRIALS / len(complete)))
    evaluator = PedAnovaImportanceEvaluator(target_quantile=quantile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        axes = optuna_plots.plot_param_importances(study, evaluator=evaluator, target_name=METRIC)
    axes.set_title(
        f"{title}: what puts a trial in the best {quantile:.0%} of {len(complete)} (PED-ANOVA)"
    )
    _save_optuna(axes, path)
    return None


def write_plots(
    experiment: Experiment, study: optuna.Study, directory: str | os.PathLike
) -> list[Plot]:
    """Write `PLOT_FILES` into `directory`; each plot with too little data carries a note."""
    directory = Path(directory)
    paths = {name: directory / name for name in PLOT_FILES}
    plots = []

    # Learning curves: from Ray's results, every trial.
    _save(learning_curves(experiment), paths["learning_curves.png"])
    plots.append(Plot(paths["learning_curves.png"]))

    # Optuna's views of the study.
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if complete:
            axes = optuna_plots.plot_optimization_history(study, target_name=METRIC)
            _save_optuna(axes, paths["history.png"])
            plots.append(Plot(paths["history.png"]))
        else:
            note = f"no trial of the study has completed yet, so there is no final {METRIC}"
            _save(_note_figure("Optimization history", note), paths["history.png"])
            plots.append(Plot(paths["history.png"], note))

        varying = _varying(complete)
        if len(complete) >= 2 and varying:
            axes = optuna_plots.plot_parallel_coordinate(study, params=varying, target_name=METRIC)
            _save_optuna(axes, paths["parallel_coordinate.png"], width=2 + 1.1 * len(varying))
            plots.append(Plot(paths["parallel_coordinate.png"]))
        else:
            note = (
                f"parallel coordinates need two complete trials with different "
                f"hyperparameters, but the study has {len(complete)} complete"
            )
            _save(_note_figure("Parallel coordinates", note), paths["parallel_coordinate.png"])
            plots.append(Plot(paths["parallel_coordinate.png"], note))

        note = importance_plot(study, complete, paths["importance.png"])
        plots.append(Plot(paths["importance.png"], note))
    return sorted(plots, key=lambda plot: PLOT_FILES.index(plot.path.name))
