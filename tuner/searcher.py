"""Ray's OptunaSearch, made to tell Optuna the truth about stopped, failed and orphaned trials."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import optuna
import sqlalchemy.exc
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from tuner.config import ORPHANED, RAY_TRIAL_ID
from tuner.guard import StorageGuard

__all__ = ["PruningOptunaSearch"]

logger = logging.getLogger(__name__)

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

    # The experiment directory that holds the study; a class default for searchers unpickled
    # from snapshots older than the attribute.
    _guarded_path: str | None = None

    def __init__(
        self, *args: Any, max_iterations: int, guarded_path: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._max_iterations = max_iterations
        self._guarded_path = guarded_path
        self._closed_before_restore: set[str] = set()

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        try:
            config = super().suggest(trial_id)
            # Tag the Optuna trial with Ray's id: readers can join the two, and a restore can
            # tell which Optuna trials Ray still knows.
            self._ot_trials[trial_id].set_user_attr(RAY_TRIAL_ID, trial_id)
        except _STUDY_WRITE_ERRORS as error:
            self._ot_trials.pop(trial_id, None)
            if self._guarded_path and StorageGuard(self._guarded_path).probe() is not None:
                # The directory itself rejects writes. With no trial running, Tune would keep
                # asking for ten minutes before StorageGuard's next probe; end the search now.
                return Searcher.FINISHED
            logger.error("the Optuna study rejected a new trial (%s); retrying later", error)
            return None  # Tune asks again later
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
        return trial_id in self._closed_before_restore

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # A driver that crashed may have closed trials in the study after the snapshot restored
        # here; Ray may rerun their tail, and the study must not hear of them again. Only a
        # restore can leave the two out of step, so the study is read once, here.
        finished = {
            t.number for t in self._ot_study.get_trials(deepcopy=False) if t.state.is_finished()
        }
        self._closed_before_restore = {
            trial_id
            for trial_id, ot_trial in self._ot_trials.items()
            if ot_trial.number in finished and trial_id not in self._completed_trials
        }
        # Trials asked after the searcher's last snapshot are unknown to the restored run and
        # would stay RUNNING forever; close them as FAIL, saying why.
        known = {t.number for t in self._ot_trials.values()}
        for orphan in self._ot_study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            if orphan.number not in known:
                self._ot_study._storage.set_trial_user_attr(
                    orphan._trial_id, ORPHANED, "asked before the driver stopped; never ran"
                )
                self._ot_study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)
