"""Assembling and running a search: Optuna samples, ASHA stops early, Ray Tune schedules.

`run_search` is the one entry point the experiment scripts call. It checks the whole
experiment before Ray starts any trial, writes the resolved config and the Optuna study into the
experiment directory, and runs (or resumes) the Tuner.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.stopper import CombinedStopper

from tuner.config import (
    CONFIG_FILE,
    METRIC,
    MODE,
    SNAPSHOT_PERIOD_S,
    STUDY_FILE,
    STUDY_NAME,
    ExperimentConfig,
)
from tuner.guard import StorageError, StorageGuard
from tuner.scheduler import SuccessiveHalving
from tuner.searcher import PruningOptunaSearch
from tuner.space import SEED_PARAMS, SearchSpace, define_by_run
from tuner.trainable import SETTINGS, train_circles

__all__ = ["build_searcher", "build_tuner", "connect", "run_search", "study_storage_url"]

logger = logging.getLogger(__name__)

# What a driver on another machine ships to the cluster's workers (see cluster/README.md).
_WORKING_DIR_EXCLUDES = [".venv/", ".git/", "runs/", "**/__pycache__/", "*.egg-info/"]


def study_storage_url(experiment: ExperimentConfig) -> str:
    """Where the Optuna study lives: beside Ray's files, or on the driver for object stores."""
    if experiment.is_uri:
        # SQLite needs a file system; for s3:// and the like the study stays on the driver.
        local = Path("~/.circletune").expanduser() / experiment.name
        local.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{local / STUDY_FILE}"
    directory = Path(experiment.experiment_path)
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / STUDY_FILE}"


def build_searcher(experiment: ExperimentConfig, space: SearchSpace) -> PruningOptunaSearch:
    if experiment.sampler == "random":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(experiment.seed)
    else:
        sampler = optuna.samplers.TPESampler(
            seed=experiment.seed,
            n_startup_trials=experiment.n_startup_trials,
            multivariate=True,
            group=True,  # conditional parameters are modelled per group of co-occurring ones
            constant_liar=True,  # running trials count as bad, so concurrent asks spread out
        )
    storage = optuna.storages.RDBStorage(study_storage_url(experiment))
    return PruningOptunaSearch(
        space=functools.partial(define_by_run, space=space),  # picklable, for restore
        metric=METRIC,
        mode=MODE,
        sampler=sampler,
        storage=storage,
        study_name=STUDY_NAME,
        points_to_evaluate=[dict(SEED_PARAMS)],
        max_iterations=experiment.max_iterations,
        guarded_path=None if experiment.is_uri else experiment.experiment_path,
    )


def trial_dirname(trial: tune.experiment.Trial) -> str:
    """Short trial directory names; the parameters live in each trial's params.json."""
    return f"trial_{trial.trial_id}"


def build_tuner(
    experiment: ExperimentConfig,
    space: SearchSpace,
    trainable: Callable[[dict[str, Any]], None] = train_circles,
    stop: tune.Stopper | None = None,
) -> tune.Tuner:
    """The Tuner for a new experiment.

    Benchmarks pass their own `trainable` (instead of `train_circles`) or an extra `stop`.
    """
    trainable = tune.with_resources(
        trainable, {"cpu": experiment.cpus_per_trial, "gpu": experiment.gpus_per_trial}
    )
    scheduler = (
        SuccessiveHalving(
            max_t=experiment.max_iterations,
            grace_period=experiment.grace_period,
            reduction_factor=experiment.reduction_factor,
        )
        if experiment.early_stopping
        else None  # every trial runs max_iterations
    )
    tune_config = tune.TuneConfig(
        metric=METRIC,
        mode=MODE,
        search_alg=build_searcher(experiment, space),
        scheduler=scheduler,
        num_samples=experiment.num_samples,
        max_concurrent_trials=experiment.max_concurrent,
        time_budget_s=experiment.time_budget_s,
        reuse_actors=experiment.reuse_actors,
        trial_dirname_creator=trial_dirname,
    )
    return tune.Tuner(
        trainable,
        param_space={SETTINGS: experiment.settings()},
        tune_config=tune_config,
        run_config=_run_config(experiment, stop),
    )


def _run_config(experiment: ExperimentConfig, stop: tune.Stopper | None) -> tune.RunConfig:
    # Object stores are checked by Ray's own uploads; the guard watches file systems.
    guards = [] if experiment.is_uri else [StorageGuard(experiment.experiment_path)]
    stoppers = [*guards, *([stop] if stop is not None else [])]
    return tune.RunConfig(
        name=experiment.name,
        storage_path=experiment.storage_path
        if experiment.is_uri
        else str(Path(experiment.storage_path).expanduser().resolve()),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=experiment.keep_checkpoints,
            checkpoint_score_attribute=METRIC,
            checkpoint_score_order=MODE,
        ),
        failure_config=tune.FailureConfig(max_failures=experiment.max_failures),
        # Trials write their TensorBoard files themselves; artifact sync brings them over
        # from the node that ran the trial.
        sync_config=tune.SyncConfig(sync_artifacts=True),
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), *guards],
        stop=_combine(stoppers),
        verbose=1,
    )


def _combine(stoppers: list[tune.Stopper]) -> tune.Stopper | None:
    if len(stoppers) <= 1:
        return stoppers[0] if stoppers else None
    return CombinedStopper(*stoppers)


def _check_storage(experiment: ExperimentConfig) -> None:
    """Fail now, naming the path, if results could not be written there."""
    if experiment.is_uri:
        return  # checked by Ray's storage file system when the run starts
    root = Path(experiment.storage_path).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".circletune-write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"storage path {str(root)!r} cannot be written ({error.strerror or error}); "
            f"choose a writable directory with --storage-path"
        ) from None


def _check_resources(experiment: ExperimentConfig) -> None:
    """Fail now if no node of the cluster could ever hold one trial.

    An autoscaling cluster may have no worker yet; `experiment.autoscaling` skips the check.
    """
    if experiment.autoscaling:
        return
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    if experiment.gpus_per_trial > most_gpus:
        raise ValueError(
            f"gpus_per_trial={experiment.gpus_per_trial:g} but the largest node of this Ray "
            f"cluster has {most_gpus:g} GPUs; allowed: 0 to {most_gpus:g} (on a cluster "
            f"that adds GPU nodes on demand, pass --autoscaling)"
        )
    if experiment.cpus_per_trial > most_cpus:
        raise ValueError(
            f"cpus_per_trial={experiment.cpus_per_trial:g} but the largest node of this Ray "
            f"cluster has {most_cpus:g} CPUs; allowed: up to {most_cpus:g}"
        )


def _repo_root() -> Path | None:
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").exists() else None


def connect(address: str | None) -> bool:
    """Start an embedded Ray (no address) or join a cluster; True if this call started it.

    Joining a cluster ships this checkout to the workers as Ray's `working_dir`, so the driver
    and every worker run the same code even where the node image holds another version.
    """
    if ray.is_initialized():
        return False
    if address:
        root = _repo_root()
        # A driver started by `ray job submit` already runs in the job's runtime environment,
        # and Ray refuses to merge a second working_dir into it.
        in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
        runtime_env = (
            {"working_dir": str(root), "excludes": _WORKING_DIR_EXCLUDES}
            if root and not in_job
            else None
        )
        ray.init(address=address, runtime_env=runtime_env)
    else:
        ray.init(address="local")
    return True


def run_search(
    experiment: ExperimentConfig,
    space: SearchSpace,
    address: str | None = None,
    resume: bool = False,
) -> tune.ResultGrid:
    """Run `experiment` to the end (or continue it, with `resume`) and return its results.

    Raises:
        ValueError: the storage path cannot be written, the experiment already exists (without
            `resume`) or does not (with it), or the cluster cannot hold one trial.
    """
    _check_storage(experiment)
    path = experiment.experiment_path
    exists = tune.Tuner.can_restore(path)
    if resume and not exists:
        raise ValueError(f"there is no experiment to resume at {path}")
    if not resume and exists:
        raise ValueError(
            f"an experiment already exists at {path}; pass --resume to continue it, "
            f"or choose another --name"
        )

    started = connect(address)
    try:
        _check_resources(experiment)
        # Trials write their own TensorBoard files (tuner.board); Ray's copy would duplicate them.
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        # Snapshot the experiment state every few seconds instead of Ray's adaptive default
        # (10 s or more): after a driver crash, less is redone (see README, limits).
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(SNAPSHOT_PERIOD_S))
        if resume:
            logger.info("resuming %s", path)
            tuner = tune.Tuner.restore(
                path,
                trainable=tune.with_resources(
                    train_circles,
                    {"cpu": experiment.cpus_per_trial, "gpu": experiment.gpus_per_trial},
                ),
                resume_unfinished=True,
                resume_errored=False,
            )
        else:
            _write_config(experiment, space)
            tuner = build_tuner(experiment, space)
        results = tuner.fit()
        failure = StorageGuard.failures.pop(path, None)
        if failure is not None:
            raise StorageError(failure)
        if experiment.is_uri:
            _upload_study(experiment)
        return results
    finally:
        if started:
            ray.shutdown()


def _write_config(experiment: ExperimentConfig, space: SearchSpace) -> None:
    resolved = {
        "experiment": experiment.to_dict(),
        "search_space": space.to_dict(),
        "seed_params": SEED_PARAMS,
        "metric": METRIC,
        "mode": MODE,
        "study": {"name": STUDY_NAME, "storage": study_storage_url(experiment)},
        "ray": ray.__version__,
        "optuna": optuna.__version__,
    }
    text = json.dumps(resolved, indent=2)
    if experiment.is_uri:
        local = Path(study_storage_url(experiment).removeprefix("sqlite:///")).parent
        (local / CONFIG_FILE).write_text(text)
        return
    directory = Path(experiment.experiment_path)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(text)


def _upload_study(experiment: ExperimentConfig) -> None:
    import pyarrow.fs

    local = Path(study_storage_url(experiment).removeprefix("sqlite:///")).parent
    filesystem, root = pyarrow.fs.FileSystem.from_uri(experiment.experiment_path)
    for name in (STUDY_FILE, CONFIG_FILE):
        pyarrow.fs.copy_files(
            str(local / name), f"{root}/{name}", destination_filesystem=filesystem
        )
