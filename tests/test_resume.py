"""A driver killed with SIGKILL mid-search, then `--resume`: nothing finished runs again."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from ray.tune import ExperimentAnalysis

from tests.conftest import ROOT, kill_session, session_processes
from tuner.config import ORPHANED, RAY_TRIAL_ID, STUDY_FILE, STUDY_NAME

pytestmark = pytest.mark.ray

ARGS = ["--smoke-test", "--num-samples", "6", "--max-concurrent", "1"]
ARGS += ["--steps-per-iteration", "3", "--max-iterations", "3", "--name", "killed"]


def _quickstart(storage: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "experiments" / "quickstart.py"), *ARGS, *extra],
        cwd=storage,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own session: the test can end exactly what it started
    )


def _finished_in_study(path: Path) -> int:
    # Read-only: opening the study with Optuna could write its schema while the driver does.
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path / STUDY_FILE}?mode=ro", uri=True, timeout=1)
        ) as db:
            query = "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')"
            return db.execute(query).fetchone()[0]
    except sqlite3.Error:  # not there yet, or the driver is still creating it
        return 0


def _terminated_in_snapshot(path: Path) -> set[str]:
    if not any(path.glob("experiment_state-*.json")):
        return set()
    return {t.trial_id for t in ExperimentAnalysis(str(path)).trials if t.status == "TERMINATED"}


def _trial_results(path: Path) -> dict[str, str]:
    return {d.name: (d / "result.json").read_text() for d in path.glob("trial_*")}


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    path = tmp_path / "killed"
    driver = _quickstart(tmp_path, "--storage-path", str(tmp_path))
    try:
        deadline = time.monotonic() + 150
        while _finished_in_study(path) < 2 or not _terminated_in_snapshot(path):
            assert driver.poll() is None, driver.stdout.read()
            assert time.monotonic() < deadline, "the search did not get going"
            time.sleep(0.5)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        kill_session(driver.pid)
    assert not session_processes(driver.pid)

    # What Ray's last snapshot says had finished before the kill.
    done = _terminated_in_snapshot(path)
    assert done, "no trial had finished before the kill"
    assert len(ExperimentAnalysis(str(path)).trials) < 6, "the search ended before the kill"
    results_before = _trial_results(path)

    resumed = _quickstart(tmp_path, "--storage-path", str(tmp_path), "--resume")
    try:
        output, _ = resumed.communicate(timeout=240)
    finally:
        kill_session(resumed.pid)
    assert resumed.returncode == 0, output

    after = ExperimentAnalysis(str(path))
    assert len(after.trials) == 6
    assert all(t.status in ("TERMINATED", "ERROR") for t in after.trials)
    ids_after = {t.trial_id for t in after.trials}
    assert done <= ids_after
    results_after = _trial_results(path)
    for trial_id in done:
        name = f"trial_{trial_id}"
        assert results_after[name] == results_before[name], f"{trial_id} ran again"

    # Every Ray trial is in the study exactly once; anything else was asked by the killed
    # driver for a trial that never ran, and says so.
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{path / STUDY_FILE}")
    tagged = [t.user_attrs.get(RAY_TRIAL_ID) for t in study.trials if ORPHANED not in t.user_attrs]
    assert sorted(tagged) == sorted(ids_after)
    assert all(t.state.is_finished() for t in study.trials)
