"""Assembling and running a search: Optuna samples, ASHA stops early, Ray Tune schedules.

`run_search` is the one entry point the experiment scripts call. It checks the whole
experiment before Ray starts any trial, writes the resolved config and the Optuna study into the
experiment directory, and runs (or resumes) the Tuner.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import optuna
import ray
import sqlalchemy.exc
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from data import CircleConfig
from models import TrainConfig
from tuner.space import SEED_PARAMS, SearchSpace, define_by_run
from tuner.trainable import SETTINGS, train_circles

__all__ = [
    "CONFIG_FILE",
    "METRIC",
    "MODE",
    "STUDY_FILE",
    "ExperimentConfig",
    "PruningOptunaSearch",
    "build_tuner",
    "run_search",
]

logger = logging.getLogger(__name__)

METRIC, MODE = "val_rmse", "min"
CONFIG_FILE = "circletune.json"
STUDY_FILE = "optuna.db"
STUDY_NAME = "circletune"
RAY_TRIAL_ID = "ray_trial_id"  # user attribute of each Optuna trial
SNAPSHOT_PERIOD_S = 2
SAMPLERS = ("tpe", "random")
ORPHANED = "orphaned"  # user attribute of trials a crashed driver asked for but never ran

# What a driver on another machine ships to the cluster's workers (see cluster/README.md).
_WORKING_DIR_EXCLUDES = [".venv/", ".git/", "runs/", "**/__pycache__/", "*.egg-info/"]


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a search needs besides the search space; saved as `circletune.json`.

    Budgets are counted in iterations: `steps_per_iteration` optimiser steps, then one
    validation pass and one report. ASHA decides at rungs `grace_period * reduction_factor^k`.
    """

    name: str = "circles"
    storage_path: str = "runs"
    num_samples: int = 20
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    time_budget_s: float | None = None
    seed: int = 0
    steps_per_iteration: int = 50
    max_iterations: int = 16
    grace_period: int = 1
    reduction_factor: int = 2
    n_startup_trials: int = 8
    val_size: int = 2048
    max_failures: int = 2
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    picture_every: int = 4
    reuse_actors: bool = True
    sampler: str = "tpe"
    early_stopping: bool = True
    autoscaling: bool = False
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    circles: CircleConfig = field(default_factory=CircleConfig)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name or ""):
            raise ValueError(
                f"name must be letters, digits, '_', '.' or '-' (a directory name), "
                f"but got {self.name!r}"
            )
        for name, minimum in (
            ("num_samples", 1),
            ("max_concurrent", 1),
            ("steps_per_iteration", 1),
            ("max_iterations", 1),
            ("grace_period", 1),
            ("reduction_factor", 2),
            ("n_startup_trials", 0),
            ("max_failures", 0),
            ("checkpoint_every", 1),
            ("keep_checkpoints", 1),
            ("picture_every", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, but got {value!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {list(SAMPLERS)}, but got {self.sampler!r}")
        if self.grace_period > self.max_iterations:
            raise ValueError(
                f"grace_period must be <= max_iterations ({self.max_iterations}), "
                f"but got {self.grace_period}"
            )
        if not (isinstance(self.cpus_per_trial, (int, float)) and self.cpus_per_trial > 0):
            raise ValueError(f"cpus_per_trial must be > 0, but got {self.cpus_per_trial!r}")
        gpus = self.gpus_per_trial
        if not (isinstance(gpus, (int, float)) and gpus >= 0) or (gpus > 1 and gpus % 1):
            raise ValueError(
                f"gpus_per_trial must be 0, a fraction in (0, 1] or a whole number, "
                f"but got {gpus!r}"
            )
        if self.time_budget_s is not None and not (
            isinstance(self.time_budget_s, (int, float))
            and math.isfinite(self.time_budget_s)
            and self.time_budget_s > 0
        ):
            raise ValueError(f"time_budget_s must be > 0 seconds, but got {self.time_budget_s!r}")
        self.train_options()  # checks precision, val_size and the rest now, not in a trial

    def train_options(self) -> dict[str, Any]:
        """The `TrainConfig` fields that are fixed for the whole experiment."""
        options = {
            "val_size": self.val_size,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
        }
        TrainConfig(**options)
        return options

    def settings(self) -> dict[str, Any]:
        """What every trial receives besides its sampled parameters."""
        return {
            "circles": dataclasses.asdict(self.circles),
            "train": self.train_options(),
            "seed": self.seed,
            "steps_per_iteration": self.steps_per_iteration,
            "max_iterations": self.max_iterations,
            "checkpoint_every": self.checkpoint_every,
            "picture_every": self.picture_every,
        }

    @property
    def is_uri(self) -> bool:
        return "://" in self.storage_path

    @property
    def experiment_path(self) -> str:
        if self.is_uri:
            return f"{self.storage_path.rstrip('/')}/{self.name}"
        return str(Path(self.storage_path).expanduser().resolve() / self.name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown experiment keys {unknown}; allowed: {sorted(known)}")
        if "circles" in data:
            data["circles"] = CircleConfig(**data["circles"])
        return cls(**data)


class StorageError(RuntimeError):
    """The experiment directory stopped accepting writes in the middle of a search."""


class StorageGuard(tune.Callback, tune.Stopper):
    """Ends the search cleanly, naming the path, once the experiment directory rejects a write.

    Without it, a full or read-only disk shows up as trials failing one by one, with retries,
    while Ray's snapshots of the experiment are cut short mid-file. The guard keeps a reserve
    file of `reserve_bytes` in the experiment directory. A probe write (at most one per
    `period_s`) that fails releases the reserve and stops every trial, so the final snapshot of
    the experiment state still finds room and the directory stays readable.
    """

    RESERVE = ".circletune-reserve"
    # Failures by experiment path, read by run_search: the guard that runs is the Tuner's own
    # copy (unpickled from the experiment directory after a restore), not one we hold.
    failures: ClassVar[dict[str, str]] = {}

    def __init__(self, path: str, period_s: float = 1.0, reserve_bytes: int = 32 << 20) -> None:
        self.path = Path(path)
        self.period_s = period_s
        self.reserve_bytes = reserve_bytes
        self.error: str | None = None
        self._last = 0.0

    def setup(self, **info: Any) -> None:
        reserve = self.path / self.RESERVE
        if not reserve.exists():
            with open(reserve, "wb") as file:
                file.truncate(0)
                chunk = b"\0" * (1 << 20)
                for _ in range(self.reserve_bytes >> 20):
                    file.write(chunk)

    def check(self) -> str | None:
        """Why the experiment directory rejects a small write now, or None if it takes it."""
        probe = self.path / ".circletune-probe"
        try:
            probe.write_bytes(b"ok" * 512)
            probe.unlink()
        except OSError as error:
            return (
                f"storage path {str(self.path)!r} cannot be written any more "
                f"({error.strerror or error}); what was written before stays readable there. "
                f"Free space or restore write access, then rerun with --resume"
            )
        return None

    def _watch(self, now: bool = False) -> None:
        if self.error is not None or (not now and time.monotonic() - self._last < self.period_s):
            return
        self._last = time.monotonic()
        self.error = self.check()
        if self.error is not None:
            logger.error("%s", self.error)
            StorageGuard.failures[str(self.path)] = self.error
            with contextlib.suppress(OSError):  # a read-only directory has nothing to free
                (self.path / self.RESERVE).unlink(missing_ok=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._watch()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._watch(now=True)  # a failing trial may be the first sign

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.error is not None

    def stop_all(self) -> bool:
        return self.error is not None


# What Optuna's RDB storage raises when its database file cannot be written (disk full,
# read-only); the search stops through StorageGuard rather than crash the driver mid-write.
_STUDY_WRITE_ERRORS = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError)


@contextlib.contextmanager
def _study_write(what: str, trial_id: str) -> Iterator[None]:
    try:
        yield
    except _STUDY_WRITE_ERRORS as error:
        logger.error("the Optuna study did not record the %s of %s: %s", what, trial_id, error)


class PruningOptunaSearch(OptunaSearch):
    """`OptunaSearch` that tells Optuna the truth about trials that did not run to the end.

    Ray reports a trial stopped by ASHA as complete, with its last, half-trained score; told so,
    TPE would rank a config by a truncated result as if it were final. Here such a trial
    becomes PRUNED: Optuna keeps its intermediate values, and TPE compares it with others at the
    same step. An errored trial becomes FAIL instead of COMPLETE with its last score.
    """

    def __init__(self, *args: Any, max_iterations: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_iterations = max_iterations

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        try:
            config = super().suggest(trial_id)
            # Tag the Optuna trial with Ray's id: readers can join the two, and a restore can
            # tell which Optuna trials Ray still knows.
            self._ot_trials[trial_id].set_user_attr(RAY_TRIAL_ID, trial_id)
        except _STUDY_WRITE_ERRORS as error:
            self._ot_trials.pop(trial_id, None)
            logger.error("the Optuna study rejected a new trial (%s); retrying later", error)
            return None  # Tune asks again later; StorageGuard stops a search whose disk failed
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        with _study_write("result", trial_id):
            if not self._finished_in_study(trial_id):
                super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        with _study_write("end", trial_id):
            self._complete(trial_id, result, error)

    def _complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        if self._finished_in_study(trial_id):
            return
        iterations = (result or {}).get("training_iteration", 0)
        if error:
            # Without a result, Ray's OptunaSearch tells FAIL on error and PRUNED otherwise.
            super().on_trial_complete(trial_id, result=None, error=True)
        elif result is not None and iterations < self._max_iterations:
            # Ray hands the result that made ASHA stop the trial to on_trial_complete only;
            # record it as the last intermediate value, which Optuna keeps for PRUNED trials.
            super().on_trial_result(trial_id, result)
            super().on_trial_complete(trial_id, result=None, error=False)
        else:
            super().on_trial_complete(trial_id, result=result, error=error)

    def _finished_in_study(self, trial_id: str) -> bool:
        # After a driver crash, Ray may rerun the tail of a trial the study already closed.
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        return ot_trial.storage.get_trial(ot_trial._trial_id).state.is_finished()

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # Trials asked after the searcher's last snapshot are unknown to the restored run and
        # would stay RUNNING forever; close them as FAIL, saying why.
        known = {t.number for t in self._ot_trials.values()}
        for orphan in self._ot_study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            if orphan.number not in known:
                self._ot_study._storage.set_trial_user_attr(
                    orphan._trial_id, ORPHANED, "asked before the driver stopped; never ran"
                )
                self._ot_study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)


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
        ASHAScheduler(
            time_attr="training_iteration",
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
    from ray.tune.stopper import CombinedStopper

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


def load_experiment_config(path: str | os.PathLike) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        json.loads(Path(path, CONFIG_FILE).read_text())["experiment"]
    )


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
