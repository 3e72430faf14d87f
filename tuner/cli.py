"""The `circletune` command: inspect an experiment directory, export its best model, predict.

    circletune results PATH [--top K] [--json] [--csv FILE]
    circletune show PATH --out FILE.png|FILE.gif [--trial ID] [--count N]
    circletune plots PATH --out DIR
    circletune export PATH --out model.pt [--trial ID]
    circletune predict MODEL IMAGES.npy [--out PREDICTIONS.npy]

Every command reads the experiment through Ray Tune's and Optuna's own readers and never starts
Ray, so it works on a finished search, one still running and one that was interrupted. A path
that cannot be used ends the command with one sentence on stderr and exit status 1; a bad flag
with argparse's usage message and status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tuner.export import CircleModel, from_checkpoint, load_images, load_model
from tuner.results import Experiment, ResultsError, load_experiment, load_study, writing

__all__ = ["main"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {value}")
    return value


def _picture(text: str) -> str:
    if Path(text).suffix.lower() not in (".png", ".gif"):
        raise argparse.ArgumentTypeError(f"must end in .png or .gif, but got {text!r}")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circletune", description="Inspect circletune experiments and use their models."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    experiment_help = "experiment directory, <storage_path>/<name>"
    trial_help = "trial id (default: the best trial by last val_rmse)"

    results = commands.add_parser("results", help="table of the best trials")
    results.add_argument("path", metavar="PATH", help=experiment_help)
    results.add_argument("--top", type=_positive, default=10, help="trials shown (default 10)")
    results.add_argument("--json", action="store_true", help="print one JSON object instead")
    results.add_argument("--csv", metavar="FILE", help="also write every trial to a CSV file")

    show = commands.add_parser("show", help="picture of a trial's predictions")
    show.add_argument("path", metavar="PATH", help=experiment_help)
    show.add_argument(
        "--out", required=True, type=_picture, metavar="FILE", help=".png grid or .gif animation"
    )
    show.add_argument("--trial", metavar="ID", help=trial_help)
    show.add_argument("--count", type=_positive, default=16, help="validation images (16)")
    show.add_argument("--columns", type=_positive, default=4, help="pictures per row (4)")

    plots = commands.add_parser("plots", help="PNG plots of the whole search")
    plots.add_argument("path", metavar="PATH", help=experiment_help)
    plots.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files")

    export = commands.add_parser("export", help="write a trial's model as a stand-alone file")
    export.add_argument("path", metavar="PATH", help=experiment_help)
    export.add_argument("--out", required=True, metavar="FILE", help="e.g. model.pt")
    export.add_argument("--trial", metavar="ID", help=trial_help)

    predict = commands.add_parser("predict", help="x, y, r for each image of a .npy file")
    predict.add_argument("model", metavar="MODEL", help="a file written by circletune export")
    predict.add_argument("images", metavar="IMAGES", help=".npy, (N, 64, 64) or (N, 1, 64, 64)")
    predict.add_argument("--out", metavar="FILE", help="also save the (N, 3) array as .npy")
    return parser


def _trial_model(experiment: Experiment, trial_id: str | None) -> CircleModel:
    trial = experiment.trial(trial_id)
    if trial.checkpoint is None:
        raise ResultsError(f"trial {trial.trial_id} ({trial.status}) has no checkpoint yet")
    source = {"experiment": experiment.path, "trial_id": trial.trial_id}
    return from_checkpoint(trial.checkpoint, source)


def _results(args: argparse.Namespace) -> None:
    from tuner.report import results_document, results_table, write_csv

    experiment = load_experiment(args.path)
    text = (
        json.dumps(results_document(experiment), indent=2)
        if args.json
        else results_table(experiment, args.top)
    )
    if args.csv:
        rows = write_csv(experiment, args.csv)
        # Keep stdout pure JSON when --json asked for it.
        print(f"wrote {rows} trials to {args.csv}", file=sys.stderr)
    print(text)


def _show(args: argparse.Namespace) -> None:
    from tuner.show import prediction_pictures, save_animation, save_grid

    experiment = load_experiment(args.path)
    model = _trial_model(experiment, args.trial)
    pictures, iou = prediction_pictures(model, args.count)
    if args.out.lower().endswith(".gif"):
        path = save_animation(pictures, iou, args.out)
    else:
        title = f"trial {model.source['trial_id']}: true circle dark, predicted bright"
        path = save_grid(pictures, iou, args.out, args.columns, title)
    print(
        f"wrote {path}: trial {model.source['trial_id']} at iteration "
        f"{model.source['iteration']}, {len(pictures)} validation images, "
        f"mean IoU {iou.mean():.3f}"
    )


def _plots(args: argparse.Namespace) -> None:
    from tuner.plots import write_plots

    experiment = load_experiment(args.path)
    with load_study(experiment) as study:
        plots = write_plots(experiment, study, args.out)
    for plot in plots:
        print(f"wrote {plot.path}" + (f" (note: {plot.note})" if plot.note else ""))


def _export(args: argparse.Namespace) -> None:
    experiment = load_experiment(args.path)
    model = _trial_model(experiment, args.trial)
    path = model.save(args.out)
    print(
        f"wrote {path}: trial {model.source['trial_id']} at iteration "
        f"{model.source['iteration']}; use it with: circletune predict {path} IMAGES.npy"
    )


def _predict(args: argparse.Namespace) -> None:
    model = load_model(args.model)
    images = load_images(args.images, model.circles.image_size)  # (N, 1, size, size)
    predictions = model.predict(images).numpy()  # (N, 3)
    if args.out:
        with writing(args.out) as target:
            np.save(target, predictions)
    print(f"{'image':>5}  {'x':>8}  {'y':>8}  {'r':>8}")
    for i, (x, y, r) in enumerate(predictions):
        print(f"{i:>5}  {x:8.3f}  {y:8.3f}  {r:8.3f}")


COMMANDS = {
    "results": _results,
    "show": _show,
    "plots": _plots,
    "export": _export,
    "predict": _predict,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (argparse exits by itself on bad flags)."""
    args = _parser().parse_args(argv)

    # Pictures are written to files only; Ray's reader warns about trials that have not
    # reported yet, which the commands show in their own words.
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    try:
        COMMANDS[args.command](args)
    except ResultsError as error:
        print(f"circletune {args.command}: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader of stdout (`| head`) has gone: stop quietly, as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
