"""SuccessiveHalving's decisions, result by result, without a Ray cluster."""

import math

import pytest
from ray.tune.schedulers import TrialScheduler

from tuner import SuccessiveHalving

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def scheduler(mode="min", **options):
    options = {"max_t": 8, "grace_period": 1, "reduction_factor": 2, **options}
    halving = SuccessiveHalving(**options)
    assert halving.set_search_properties("val_rmse", mode)
    return halving


def result(iteration, value):
    return {"training_iteration": iteration, "val_rmse": value}


def test_rungs_below_max_t():
    assert scheduler().milestones == [1, 2, 4]
    assert scheduler(max_t=27, grace_period=2, reduction_factor=3).milestones == [2, 6, 18]


def test_first_arrival_at_a_rung_stops():
    halving = scheduler()
    # Ray's ASHAScheduler would let it go on: nothing to compare it with yet.
    assert halving.judge("a", result(1, 3.0)) == STOP


def test_a_trial_goes_on_only_within_the_best_fraction_of_its_rung():
    halving = scheduler()
    decisions = [
        halving.judge(t, result(1, v)) for t, v in zip("abcd", [5.0, 4.0, 6.0, 3.0], strict=True)
    ]
    # b is best of 2 (keep 1); c is third of 3 (keep 1); d is best of 4 (keep 2).
    assert decisions == [STOP, CONTINUE, STOP, CONTINUE]
    assert halving.judge("e", result(1, 4.5)) == STOP  # third of 5: keep 2
    assert halving.judge("f", result(1, 3.5)) == CONTINUE  # second of 6: keep 3


def test_each_rung_is_judged_once_and_separately():
    halving = scheduler()
    halving.judge("a", result(1, 9.0))
    assert halving.judge("b", result(1, 8.0)) == CONTINUE
    assert halving.judge("b", result(2, 7.0)) == STOP  # first at rung 2
    halving.judge("c", result(1, 7.0))
    halving.judge("c", result(2, 6.0))
    assert halving.judge("c", result(3, 1.0)) == CONTINUE  # between rungs
    assert halving.rungs == {1: {"a": 9.0, "b": 8.0, "c": 7.0}, 2: {"b": 7.0, "c": 6.0}, 4: {}}


def test_max_t_ends_every_trial():
    assert scheduler().judge("a", result(8, 0.1)) == STOP


def test_maximised_metric_and_nan():
    halving = scheduler(mode="max")
    halving.judge("a", result(1, 0.5))
    assert halving.judge("b", result(1, 0.9)) == CONTINUE
    assert halving.judge("c", result(1, math.nan)) == STOP
    assert halving.rungs[1]["c"] == math.inf  # ranks below every number


def test_result_that_ended_a_trial_elsewhere_still_ranks():
    halving = scheduler()
    halving.on_trial_complete(None, type("T", (), {"trial_id": "a"}), result(1, 2.0))
    assert halving.judge("b", result(1, 3.0)) == STOP


@pytest.mark.parametrize(
    "options", [{"grace_period": 0}, {"grace_period": 9}, {"reduction_factor": 1}]
)
def test_bad_settings_are_refused(options):
    with pytest.raises(ValueError, match="SuccessiveHalving needs"):
        scheduler(**options)
