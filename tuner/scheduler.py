"""Asynchronous successive halving in which a trial earns every rung it passes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

__all__ = ["SuccessiveHalving"]


class SuccessiveHalving(FIFOScheduler):
    """ASHA that stops a trial it cannot yet rank, instead of letting it through.

    Rungs sit at `grace_period * reduction_factor**k` iterations, below `max_t`. A trial that
    reaches a rung goes on only if it is among the best `n // reduction_factor` of the `n` trials
    that have reached that rung so far, itself included; a trial stops at `max_t` in any case.

    In the ASHA paper a trial that cannot be promoted yet waits, and may be promoted later when
    worse ones arrive. Ray's `ASHAScheduler` cannot make a trial wait, so it lets the first
    arrival at a rung go on. On a search of a dozen trials those free passes cost much of the
    budget: the first trials, drawn at random and often poor, train to the end, and as the only
    finished trials they are what TPE first models as good. Here the first
    `reduction_factor - 1` arrivals at each rung stop, as Optuna's `SuccessiveHalvingPruner`
    does with a `bootstrap_count`.
    """

    def __init__(
        self,
        *,
        max_t: int,
        grace_period: int = 1,
        reduction_factor: int = 2,
        time_attr: str = "training_iteration",
    ) -> None:
        if not 1 <= grace_period <= max_t or reduction_factor < 2:
            raise ValueError(
                "SuccessiveHalving needs 1 <= grace_period <= max_t and reduction_factor >= 2, "
                f"but got grace_period={grace_period}, max_t={max_t}, "
                f"reduction_factor={reduction_factor}"
            )
        super().__init__()
        self.max_t = max_t
        self.reduction_factor = reduction_factor
        self.time_attr = time_attr
        self.milestones = []
        milestone = grace_period
        while milestone < max_t:
            self.milestones.append(milestone)
            milestone *= reduction_factor
        # milestone -> trial id -> score at that milestone (lower is better)
        self.rungs: dict[int, dict[str, float]] = {m: {} for m in self.milestones}
        self.sign = 1.0  # -1.0 when the metric is maximised

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if self._metric is not None and metric is not None:
            return False
        self._metric = metric
        self.sign = -1.0 if mode == "max" else 1.0
        return True

    def on_trial_result(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> str:
        return self.judge(trial.trial_id, result)

    def on_trial_complete(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> None:
        # A result that ended the trial another way (a stopper, a time budget) still ranks.
        self.judge(trial.trial_id, result)

    def judge(self, trial_id: str, result: dict[str, Any]) -> str:
        """Record `result` at the highest rung it reaches and say whether the trial goes on."""
        if self.metric is None or self.metric not in result or self.time_attr not in result:
            return TrialScheduler.CONTINUE
        t = result[self.time_attr]
        if t >= self.max_t:
            return TrialScheduler.STOP
        reached = [m for m in self.milestones if m <= t]
        if not reached or trial_id in self.rungs[reached[-1]]:
            return TrialScheduler.CONTINUE
        recorded = self.rungs[reached[-1]]
        score = self.sign * float(result[self.metric])
        recorded[trial_id] = math.inf if math.isnan(score) else score
        better = sum(other < recorded[trial_id] for other in recorded.values())
        keep = len(recorded) // self.reduction_factor
        return TrialScheduler.CONTINUE if better < keep else TrialScheduler.STOP

    def debug_string(self) -> str:
        counts = ", ".join(f"{m}: {len(r)}" for m, r in self.rungs.items())
        return f"SuccessiveHalving: trials per rung {{{counts}}}"
