"""The circletune command on real experiment directories: results, show, plots, export, predict.

One small quickstart search (and one search stopped before any trial reported) is run once for
the module; Ray is shut down before any command runs, so every command is shown to read the
directory without a Ray cluster.
"""

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from data import validation_set
from models import ConvRegressor, ModelConfig
from tests.conftest import ROOT, load_experiment_script
from tuner import load_checkpoint, run_search, train_circles
from tuner.cli import main
from tuner.config import ExperimentConfig
from tuner.experiment import main as run_experiment
from tuner.plots import MIN_IMPORTANCE_TRIALS, PLOT_FILES, importance_plot
from tuner.show import CELL_PIXELS, FRAME_PIXELS

pytestmark = pytest.mark.ray

MAX_ITERATIONS = 3
SMOKE_ARGS = ["--smoke-test", "--num-samples", "6", "--steps-per-iteration", "5"]
SMOKE_ARGS += ["--max-iterations", str(MAX_ITERATIONS)]
TABLE_HEADER = ["rank", "trial", "status", "val_rmse", "val_rmse_x", "val_rmse_y", "val_rmse_r"]
TABLE_HEADER += ["val_iou", "iter"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`quickstart`: a finished smoke search; `no_iteration`: one whose trials never reported."""
    ray = pytest.importorskip("ray")
    script = load_experiment_script("quickstart")
    storage = tmp_path_factory.mktemp("cli-runs")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_experiment(
            "quickstart",
            script["EXPERIMENT"],
            script["SPACE"],
            argv=[*SMOKE_ARGS, "--storage-path", str(storage)],
        )
        # The time budget ends the search before any trial can report an iteration.
        budget = ExperimentConfig(
            name="no-iteration",
            storage_path=str(storage),
            num_samples=2,
            max_iterations=2,
            val_size=64,
            time_budget_s=0.01,
        )
        run_search(budget, script["SPACE"])
    finally:
        ray.shutdown()
    return {"quickstart": storage / "quickstart", "no_iteration": storage / "no-iteration"}


@pytest.fixture(scope="module")
def grid(runs):
    """Ray's own reading of the quickstart experiment, the reference for the commands."""
    from ray import tune

    return tune.Tuner.restore(str(runs["quickstart"]), trainable=train_circles).get_results()


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _table_rows(out: str) -> tuple[list[str], list[list[str]]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["rank"])
    end = lines.index("", start)
    return lines[start].split(), [line.split() for line in lines[start + 1 : end]]


def test_results_table_ranks_the_top_trials(runs, grid, capsys):
    code, out, err = _run(capsys, "results", runs["quickstart"], "--top", 4)
    assert code == 0, err
    header, rows = _table_rows(out)

    # Columns: the metrics, then hyperparameters that vary, never the fixed settings.
    assert header[: len(TABLE_HEADER)] == TABLE_HEADER
    assert "lr" in header and "settings" not in header
    assert len(rows) == 4
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]

    # Ranked by each trial's last val_rmse, as Ray reports it.
    by_rmse = sorted(grid, key=lambda r: r.metrics["val_rmse"])
    assert [row[1] for row in rows] == [r.metrics["trial_id"] for r in by_rmse[:4]]
    for row, result in zip(rows, by_rmse, strict=False):
        assert float(row[3]) == pytest.approx(result.metrics["val_rmse"], abs=1e-3)
        iterations = result.metrics["training_iteration"]
        assert int(row[8]) == iterations
        assert row[2] == ("TERMINATED" if iterations == MAX_ITERATIONS else "STOPPED")

    # The best trial's config and checkpoint, then the counts.
    best = grid.get_best_result("val_rmse", "min")
    assert f"best trial {best.metrics['trial_id']}" in out
    assert re.search(rf"\n  checkpoint +{re.escape(best.checkpoint.path)}\n", out)
    for name, value in best.config.items():
        if name != "settings":
            assert f"{json.dumps(value)}" in out
    stopped = sum(r.metrics["training_iteration"] < MAX_ITERATIONS for r in grid)
    assert out.rstrip().endswith(
        f"6 trials: {6 - stopped} finished, {stopped} stopped early, 0 errored, "
        f"0 still running or waiting"
    )


def _no_constants(name):
    raise AssertionError(f"{name} is not JSON")


def test_results_json_agrees_with_ray(runs, grid, capsys):
    import ray

    code, out, err = _run(capsys, "results", runs["quickstart"], "--json")
    assert code == 0, err
    document = json.loads(out, parse_constant=_no_constants)  # strict JSON: no NaN
    assert not ray.is_initialized(), "reading results must not start Ray"

    assert {"experiment", "metric", "mode", "best", "trials"} <= set(document)
    assert (document["metric"], document["mode"]) == ("val_rmse", "min")
    assert document["experiment"] == str(runs["quickstart"].resolve())

    best = grid.get_best_result("val_rmse", "min")
    assert set(document["best"]) == {"trial_id", "config", "metrics", "checkpoint"}
    assert document["best"]["trial_id"] == best.metrics["trial_id"]
    assert document["best"]["metrics"]["val_rmse"] == pytest.approx(best.metrics["val_rmse"])
    assert document["best"]["checkpoint"] == best.checkpoint.path
    assert document["best"]["config"] == {k: v for k, v in best.config.items() if k != "settings"}

    trials = document["trials"]
    assert len(trials) == len(grid) == 6
    assert trials[0]["trial_id"] == best.metrics["trial_id"]
    scores = [t["metrics"]["val_rmse"] for t in trials]
    assert scores == sorted(scores)
    for trial in trials:
        assert {"trial_id", "status", "config", "metrics"} <= set(trial)
        assert "settings" not in trial["config"]
        assert all(
            v is None or isinstance(v, (bool, int, float, str)) for v in trial["metrics"].values()
        )


def test_results_csv_has_every_trial(runs, grid, tmp_path, capsys):
    target = tmp_path / "out" / "trials.csv"
    code, out, err = _run(capsys, "results", runs["quickstart"], "--csv", target)
    assert code == 0, err
    with target.open() as stream:
        rows = list(csv.DictReader(stream))
    by_id = {r.metrics["trial_id"]: r for r in grid}
    assert sorted(row["trial_id"] for row in rows) == sorted(by_id)
    for row in rows:
        result = by_id[row["trial_id"]]
        assert float(row["val_rmse"]) == pytest.approx(result.metrics["val_rmse"])
        assert int(row["training_iteration"]) == result.metrics["training_iteration"]
        assert float(row["config/lr"]) == pytest.approx(result.config["lr"])
        assert "config/settings" not in row


def test_show_draws_a_grid_of_validation_pictures(runs, grid, tmp_path, capsys):
    target = tmp_path / "show.png"
    code, out, err = _run(capsys, "show", runs["quickstart"], "--out", target)
    assert code == 0, err
    best = grid.get_best_result("val_rmse", "min").metrics["trial_id"]
    assert f"trial {best}" in out
    with Image.open(target) as picture:
        assert picture.format == "PNG"
        assert picture.size == (4 * CELL_PIXELS, 4 * CELL_PIXELS)  # 16 pictures, 4 a row
        assert len(picture.convert("RGB").getcolors(maxcolors=1 << 20)) > 100


def test_show_animates_another_trial_as_a_gif(runs, grid, tmp_path, capsys):
    worst = max(grid, key=lambda r: r.metrics["val_rmse"]).metrics["trial_id"]
    target = tmp_path / "show.gif"
    argv = ["show", runs["quickstart"], "--out", target, "--count", 5, "--trial", f"trial_{worst}"]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert f"trial {worst}" in out
    with Image.open(target) as animation:
        assert animation.format == "GIF"
        assert animation.size == (FRAME_PIXELS, FRAME_PIXELS)
        assert animation.n_frames == 5


def test_plots_writes_every_png(runs, tmp_path, capsys):
    code, out, err = _run(capsys, "plots", runs["quickstart"], "--out", tmp_path / "plots")
    assert code == 0, err
    for name in PLOT_FILES:
        with Image.open(tmp_path / "plots" / name) as plot:
            assert plot.format == "PNG"
            assert plot.width > 300 and plot.height > 200
    # Six trials leave too few complete ones for importances; the output says why.
    assert f"importance needs at least {MIN_IMPORTANCE_TRIALS} complete trials" in out


def _conditional_objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    if trial.suggest_categorical("pooling", ["none", "max"]) != "none":
        trial.suggest_int("pool_every", 1, 3)
    trial.suggest_float("noise", 0, 1)
    return abs(math.log10(lr) + 2.5)


@pytest.mark.parametrize(("trials", "drawn"), [(24, True), (MIN_IMPORTANCE_TRIALS - 1, False)])
def test_importance_uses_optuna_with_conditional_params(trials, drawn, tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(_conditional_objective, n_trials=trials)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    note = importance_plot(study, complete, tmp_path / "importance.png")
    assert (note is None) == drawn
    with Image.open(tmp_path / "importance.png") as plot:
        assert plot.format == "PNG"


def _checkpoint_predictions(checkpoint_dir: str, images: torch.Tensor) -> np.ndarray:
    state, configs = load_checkpoint(checkpoint_dir)
    network = ConvRegressor(ModelConfig.from_dict(configs["model"]), 64)
    network.load_state_dict(state["model"])
    with torch.no_grad():
        return network.eval()(images).numpy()


@pytest.mark.parametrize("shape", ["(N,64,64)", "(N,1,64,64)"])
def test_export_then_predict_equals_the_checkpoint(shape, runs, grid, tmp_path, capsys):
    model = tmp_path / "model.pt"
    code, _, err = _run(capsys, "export", runs["quickstart"], "--out", model)
    assert code == 0, err

    images = validation_set(size=64)[0][:6]  # (6, 1, 64, 64)
    array = images.numpy() if shape == "(N,1,64,64)" else images[:, 0].numpy().astype(np.float64)
    np.save(tmp_path / "images.npy", array)
    saved = tmp_path / "predictions.npy"
    code, out, err = _run(capsys, "predict", model, tmp_path / "images.npy", "--out", saved)
    assert code == 0, err

    best = grid.get_best_result("val_rmse", "min")
    expected = _checkpoint_predictions(best.checkpoint.path, images)
    np.testing.assert_allclose(np.load(saved), expected, rtol=1e-6, atol=1e-5)
    printed = np.array([line.split()[1:] for line in out.splitlines()[1:]], dtype=float)
    np.testing.assert_allclose(printed, expected, atol=1e-3)


def test_exported_model_loads_without_ray(runs, tmp_path, capsys):
    model = tmp_path / "model.pt"
    assert _run(capsys, "export", runs["quickstart"], "--out", model)[0] == 0
    code = (
        "import sys, torch\n"
        "from models import ConvRegressor, ModelConfig\n"
        f"saved = torch.load({str(model)!r}, weights_only=True)\n"
        "net = ConvRegressor(ModelConfig.from_dict(saved['model']), "
        "saved['circles']['image_size'])\n"
        "net.load_state_dict(saved['state_dict'])\n"
        "assert net.eval()(torch.rand(2, 1, 64, 64)).shape == (2, 3)\n"
        "assert 'ray' not in sys.modules and 'optuna' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


@pytest.fixture
def corrupt_copy(runs, grid, tmp_path):
    """A copy of the experiment whose best trial's latest checkpoint is garbage."""
    copy = tmp_path / "quickstart"
    shutil.copytree(runs["quickstart"], copy)
    best = grid.get_best_result("val_rmse", "min")
    state = copy / Path(best.path).name / Path(best.checkpoint.path).name / "state.pt"
    state.write_bytes(b"this is not a checkpoint")
    return copy


def _assert_one_sentence(code, err, message):
    assert code == 1
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


@pytest.mark.parametrize("command", ["results", "show", "plots", "export"])
def test_a_directory_that_is_no_experiment_is_refused(command, tmp_path, capsys):
    argv = [command, tmp_path] + ([] if command == "results" else ["--out", tmp_path / "o.png"])
    code, _, err = _run(capsys, *argv)
    _assert_one_sentence(code, err, "is not an experiment directory")


@pytest.mark.parametrize("command", ["results", "show", "export"])
def test_an_experiment_without_a_finished_iteration_is_refused(command, runs, tmp_path, capsys):
    argv = [command, runs["no_iteration"]]
    argv += [] if command == "results" else ["--out", tmp_path / "o.png"]
    code, _, err = _run(capsys, *argv)
    _assert_one_sentence(code, err, "has finished an iteration yet (2 trials:")


@pytest.mark.parametrize("command", ["show", "export"])
def test_an_unknown_trial_is_refused(command, runs, tmp_path, capsys):
    argv = [command, runs["quickstart"], "--trial", "nope", "--out", tmp_path / "o.png"]
    code, _, err = _run(capsys, *argv)
    _assert_one_sentence(code, err, "there is no trial 'nope'")


@pytest.mark.parametrize("command", ["show", "export"])
def test_a_corrupt_checkpoint_is_refused(command, corrupt_copy, tmp_path, capsys):
    code, _, err = _run(capsys, command, corrupt_copy, "--out", tmp_path / "o.png")
    _assert_one_sentence(code, err, "is corrupt and cannot be loaded")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (np.zeros((2, 32, 32), np.float32), "images must have shape (N, 64, 64)"),
        (np.zeros((2, 64, 64), np.int64), "images must be floats"),
        (None, "cannot be read as a .npy array"),
    ],
)
def test_predict_refuses_bad_images(contents, message, runs, tmp_path, capsys):
    model = tmp_path / "model.pt"
    assert _run(capsys, "export", runs["quickstart"], "--out", model)[0] == 0
    images = tmp_path / "images.npy"
    if contents is None:
        images.write_bytes(b"not numpy")
    else:
        np.save(images, contents)
    code, _, err = _run(capsys, "predict", model, images)
    _assert_one_sentence(code, err, message)


def test_predict_refuses_a_file_that_is_no_model(tmp_path, capsys):
    np.save(tmp_path / "images.npy", np.zeros((1, 64, 64), np.float32))
    code, _, err = _run(capsys, "predict", tmp_path / "images.npy", tmp_path / "images.npy")
    _assert_one_sentence(code, err, "is not a model file or is corrupt")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required: COMMAND"),
        (["inspect", "x"], "invalid choice: 'inspect'"),
        (["results", "x", "--top", "0"], "--top: must be an integer >= 1, but got 0"),
        (["show", "x", "--out", "pictures.jpg"], "must end in .png or .gif"),
        (["export", "x"], "the following arguments are required: --out"),
    ],
)
def test_bad_arguments_stop_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert message in err and "usage:" in err and "Traceback" not in err
