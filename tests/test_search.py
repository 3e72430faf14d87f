"""The search end to end: quickstart in smoke mode on one small local Ray."""

import json
import math
from pathlib import Path

import optuna
import pytest
from ray import tune
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import load_experiment_script
from tuner import SEED_PARAMS, SearchSpace, build_tuner, run_search, train_circles
from tuner.board import CURVES
from tuner.config import RAY_TRIAL_ID, STUDY_FILE, STUDY_NAME, ExperimentConfig
from tuner.experiment import main, parse_experiment
from tuner.trainable import SETTINGS

pytestmark = pytest.mark.ray

# Big enough for successive halving to stop some trials.
SMOKE_ARGS = ["--smoke-test", "--num-samples", "8", "--steps-per-iteration", "10"]
SMOKE_ARGS += ["--max-iterations", "3"]


@pytest.fixture(scope="module")
def quickstart(ray_session, tmp_path_factory):
    script = load_experiment_script("quickstart")
    storage = tmp_path_factory.mktemp("runs")
    results = main(
        "quickstart",
        script["EXPERIMENT"],
        script["SPACE"],
        argv=[*SMOKE_ARGS, "--storage-path", str(storage)],
    )
    return storage / "quickstart", results


def _is_seed_trial(config: dict) -> bool:
    return all(config.get(k) == v for k, v in SEED_PARAMS.items())


def test_trials_finish_and_the_best_has_the_lowest_val_rmse(quickstart):
    _, results = quickstart
    assert len(results) == 8
    assert results.num_errors == 0
    finished = [r for r in results if r.metrics and r.metrics["training_iteration"] >= 1]
    assert len(finished) == 8

    seed = [r for r in results if _is_seed_trial(r.config)]
    assert len(seed) == 1, "the seed network is evaluated in every search"
    best = results.get_best_result()  # by the tuner's own metric and mode
    assert math.isfinite(best.metrics["val_rmse"])
    assert best.metrics["val_rmse"] == min(r.metrics["val_rmse"] for r in results)
    assert set(best.metrics) >= {"val_rmse_x", "val_rmse_y", "val_rmse_r", "val_iou", "node_id"}


def test_plain_ray_restore_reads_the_experiment(quickstart):
    path, results = quickstart
    restored = tune.Tuner.restore(str(path), train_circles).get_results()
    assert sorted(r.metrics["trial_id"] for r in restored) == sorted(
        r.metrics["trial_id"] for r in results
    )
    best = restored.get_best_result("val_rmse", "min")
    assert best.checkpoint is not None


def test_study_holds_every_trial_once_and_asha_stops_as_pruned(quickstart):
    path, results = quickstart
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{path / STUDY_FILE}")
    ray_ids = sorted(r.metrics["trial_id"] for r in results)
    assert sorted(t.user_attrs[RAY_TRIAL_ID] for t in study.trials) == ray_ids

    by_id = {t.user_attrs[RAY_TRIAL_ID]: t for t in study.trials}
    stopped = [r for r in results if r.metrics["training_iteration"] < 3]
    assert stopped, "no trial was stopped; the smoke search is too small to test pruning"
    for result in results:
        trial = by_id[result.metrics["trial_id"]]
        if result.metrics["training_iteration"] < 3:
            assert trial.state == optuna.trial.TrialState.PRUNED
            # The score that stopped it is kept at its step.
            last = max(trial.intermediate_values)
            assert last == result.metrics["training_iteration"]
            assert trial.intermediate_values[last] == pytest.approx(result.metrics["val_rmse"])
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == pytest.approx(result.metrics["val_rmse"])


def test_tensorboard_has_curves_hparams_and_pictures(quickstart):
    path, results = quickstart
    for result in results:
        events = EventAccumulator(result.path, size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        tags = events.Tags()
        assert set(CURVES) <= set(tags["scalars"])
        steps = [e.step for e in events.Scalars("val_rmse")]
        assert steps == list(range(1, result.metrics["training_iteration"] + 1))
        assert "val_predictions" in tags["images"]
        picture = events.Images("val_predictions")[-1]
        assert picture.width > 64 and picture.height > 64
        assert events.PluginTagToContent("hparams"), "no HParams session for this trial"


def test_resolved_config_is_saved(quickstart):
    path, _ = quickstart
    saved = json.loads((path / "circletune.json").read_text())
    assert saved["experiment"]["num_samples"] == 8
    assert saved["experiment"]["steps_per_iteration"] == 10
    assert (
        SearchSpace.from_dict(saved["search_space"])
        == load_experiment_script("quickstart")["SPACE"]
    )


def test_existing_experiment_is_not_overwritten(quickstart):
    path, _ = quickstart
    experiment = ExperimentConfig(name=path.name, storage_path=str(path.parent))
    before = sorted(p.name for p in path.iterdir())
    with pytest.raises(ValueError, match="already exists.*--resume"):
        run_search(experiment, SearchSpace())
    assert sorted(p.name for p in path.iterdir()) == before


def _poison_seed_trial(trainable):
    """Wrap `trainable` so that the seed trial's batches are NaN: a real divergence."""

    def poisoned(config):
        import models.training as training

        real = training.make_batch
        if _is_seed_trial(config):

            def nan_batch(*args, **kwargs):
                images, labels = real(*args, **kwargs)
                return images * float("nan"), labels

            training.make_batch = nan_batch
        try:
            trainable(config)
        finally:
            training.make_batch = real

    return poisoned


def test_nan_loss_ends_one_trial_as_error_and_the_search_goes_on(ray_session, tmp_path):
    experiment = ExperimentConfig(
        name="nan",
        storage_path=str(tmp_path),
        num_samples=3,
        steps_per_iteration=2,
        max_iterations=2,
        val_size=32,
        max_failures=1,
    )
    space = load_experiment_script("quickstart")["SPACE"]
    results = build_tuner(experiment, space, _poison_seed_trial(train_circles)).fit()

    errors = [r for r in results if r.error is not None]
    assert len(errors) == 1
    assert "train_loss became nan" in str(errors[0].error)
    assert sum(1 for r in results if r.error is None and r.metrics) == 2
    study = optuna.load_study(
        study_name=STUDY_NAME, storage=f"sqlite:///{tmp_path / 'nan' / STUDY_FILE}"
    )
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1


def _trainable_improving_with_each_trial(counter: Path):
    """Each new trial scores one pixel better than the last, the same at every iteration."""

    def scripted(config):
        with counter.open("a") as f:
            f.write(".")
        score = 10.0 - counter.stat().st_size
        for iteration in range(1, config[SETTINGS]["max_iterations"] + 1):
            tune.report({"val_rmse": score, "step": iteration})

    return scripted


def test_first_arrival_at_each_rung_stops(ray_session, tmp_path):
    experiment = ExperimentConfig(
        name="halving",
        storage_path=str(tmp_path),
        num_samples=4,
        max_concurrent=1,  # trials reach each rung in the order they were asked
        max_iterations=4,
        grace_period=1,
        reduction_factor=2,
    )
    trainable = _trainable_improving_with_each_trial(tmp_path / "counter")
    results = build_tuner(experiment, SearchSpace(), trainable).fit()
    in_order = sorted(results, key=lambda r: -r.metrics["val_rmse"])  # the order they started
    assert [r.metrics["val_rmse"] for r in in_order] == [9.0, 8.0, 7.0, 6.0]
    iterations = [r.metrics["training_iteration"] for r in in_order]
    # Rungs at 1 and 2. The first trial is alone at rung 1 and the second alone at rung 2:
    # both stop there (Ray's ASHAScheduler would let both go on). The third and fourth are
    # the best at every rung they reach and run to the end.
    assert iterations == [1, 2, 4, 4]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-samples", "-1"], "num_samples must be an integer >= 1"),
        (["--gpus-per-trial", "1.5"], "gpus_per_trial must be 0, a fraction"),
        (["--name", "../escape"], "name must be letters"),
        (["--time-budget", "0"], "time_budget_s must be > 0"),
    ],
)
def test_bad_flags_stop_with_one_message(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_experiment("test", ExperimentConfig(), argv=argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_no_early_stopping_flag():
    assert parse_experiment("test", ExperimentConfig(), argv=[])[0].early_stopping
    experiment, _ = parse_experiment("test", ExperimentConfig(), argv=["--no-early-stopping"])
    assert not experiment.early_stopping


def test_more_gpus_than_the_cluster_has_stops_before_any_trial(ray_session, tmp_path):
    experiment = ExperimentConfig(name="gpu", storage_path=str(tmp_path), gpus_per_trial=1)
    with pytest.raises(ValueError, match="gpus_per_trial=1 but the largest node .* 0 GPUs"):
        run_search(experiment, SearchSpace())
    assert not any(Path(tmp_path, "gpu").glob("trial_*"))


def test_unwritable_storage_path_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    experiment = ExperimentConfig(storage_path=str(blocker / "runs"))
    with pytest.raises(ValueError, match=f"storage path '{blocker / 'runs'}' cannot be written"):
        run_search(experiment, SearchSpace())
    assert blocker.read_text() == "not a directory"


def test_resuming_a_missing_experiment_says_so(tmp_path):
    experiment = ExperimentConfig(name="never-ran", storage_path=str(tmp_path))
    with pytest.raises(ValueError, match="no experiment to resume at .*never-ran"):
        run_search(experiment, SearchSpace(), resume=True)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pooling", ("none", "min"), "unknown choices \\['min'\\]"),
        ("kernel_size", (3, 4, 7), "odd sizes"),
        ("filters", (8, 32), "leaves out the seed network's 16"),
        ("lr", (1e-3, 1e-2), "leaves out the seed"),
    ],
)
def test_bad_search_space_is_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace(**{field: value})
