"""An experiment's trials as text: the ranked table, one JSON document, and CSV rows."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

from tuner.config import METRIC, MODE
from tuner.results import Experiment, TrialResult, describe_counts, writing

__all__ = ["json_safe", "results_document", "results_table", "write_csv"]

# The metrics every table and CSV shows first, in this order.
TABLE_METRICS = ("val_rmse", "val_rmse_x", "val_rmse_y", "val_rmse_r", "val_iou")


def json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of `metrics`; NaN and infinities become None (JSON has neither)."""
    safe: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            safe[name] = None
        elif value is None or isinstance(value, (bool, int, float, str)):
            safe[name] = value
    return safe


def _checkpoint_path(trial: TrialResult) -> str | None:
    return trial.checkpoint.path if trial.checkpoint is not None else None


def results_document(experiment: Experiment) -> dict[str, Any]:
    """Every trial, best first, and the best trial with its checkpoint, as plain JSON data.

    Raises:
        ResultsError: no trial has finished an iteration yet.
    """
    best = experiment.best()
    trials = []
    for trial in experiment.trials:
        entry = {
            "trial_id": trial.trial_id,
            "status": trial.status,
            "config": trial.params,
            "metrics": json_safe(trial.metrics),
            "checkpoint": _checkpoint_path(trial),
        }
        if trial.error is not None:
            entry["error"] = trial.error
        trials.append(entry)
    return {
        "experiment": experiment.path,
        "metric": METRIC,
        "mode": MODE,
        "best": {
            "trial_id": best.trial_id,
            "config": best.params,
            "metrics": json_safe(best.metrics),
            "checkpoint": _checkpoint_path(best),
        },
        "counts": experiment.counts(),
        "trials": trials,
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _columns(rows: list[list[str]], numeric: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def results_table(experiment: Experiment, top: int = 10) -> str:
    """The top `top` trials ranked by their last val_rmse, the best trial's config, counts.

    Raises:
        ResultsError: no trial has finished an iteration yet.
    """
    best = experiment.best()
    params = experiment.varying_params()

    # The table: metrics, then the hyperparameters that differ between trials.
    header = ["rank", "trial", "status", *TABLE_METRICS, "iter", *params]
    rows = [header]
    for rank, trial in enumerate(experiment.trials[:top], start=1):
        metrics = [trial.metrics.get(name) for name in TABLE_METRICS]
        rows.append(
            [
                str(rank) if trial.ranked else "-",
                trial.trial_id,
                trial.status,
                *(f"{m:.3f}" if isinstance(m, (int, float)) else "-" for m in metrics),
                str(trial.iterations),
                *(_cell(trial.params.get(name)) for name in params),
            ]
        )
    numeric = {0, *range(3, 4 + len(TABLE_METRICS))}
    shown = min(top, len(experiment.trials))
    lines = [
        f"experiment {experiment.path}",
        f"ranked by last {METRIC} ({MODE}); top {shown} of {len(experiment.trials)} trials, "
        f"at most {experiment.config.max_iterations} iterations each",
        "",
        *_columns(rows, numeric),
        "",
        f"best trial {best.trial_id} ({METRIC} {best.val_rmse:.3f} after "
        f"{best.iterations} iterations)",
    ]

    # The best trial's whole configuration and where its model is.
    width = max(len(name) for name in [*best.params, "checkpoint"])
    for name, value in sorted(best.params.items()):
        lines.append(f"  {name.ljust(width)}  {json.dumps(value)}")
    lines.append(f"  {'checkpoint'.ljust(width)}  {_checkpoint_path(best) or 'none'}")
    lines += ["", describe_counts(experiment.counts())]
    return "\n".join(lines)


def write_csv(experiment: Experiment, path: str | os.PathLike) -> int:
    """One row per trial (best first): status, last metrics and config; returns the rows."""
    metric_names = sorted({k for t in experiment.trials for k in json_safe(t.metrics)})
    metric_names = [m for m in TABLE_METRICS if m in metric_names] + [
        m for m in metric_names if m not in TABLE_METRICS and m != "trial_id"
    ]
    param_names = sorted({k for t in experiment.trials for k in t.params})
    fields = ["rank", "trial_id", "status", "checkpoint", *metric_names]
    fields += [f"config/{name}" for name in param_names]
    with writing(path) as target, target.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields)
        writer.writeheader()
        for rank, trial in enumerate(experiment.trials, start=1):
            metrics = json_safe(trial.metrics)
            row = {
                "rank": rank if trial.ranked else "",
                "trial_id": trial.trial_id,
                "status": trial.status,
                "checkpoint": _checkpoint_path(trial) or "",
                **{name: metrics.get(name, "") for name in metric_names},
            }
            for name in param_names:
                value = trial.params.get(name, "")
                row[f"config/{name}"] = json.dumps(value) if isinstance(value, list) else value
            writer.writerow(row)
    return len(experiment.trials)
