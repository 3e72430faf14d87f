"""The storage path fills up or turns read-only mid-search: one clear error, nothing lost."""

import subprocess
import threading
import time

import optuna
import pytest
from ray.tune import ExperimentAnalysis
from ray.tune.search import Searcher

from tests.conftest import load_experiment_script
from tuner import SearchSpace
from tuner.config import ExperimentConfig
from tuner.experiment import main
from tuner.guard import StorageGuard
from tuner.search import build_searcher

pytestmark = pytest.mark.ray


@pytest.fixture
def small_disk(tmp_path):
    """A 256 MB tmpfs of our own, so that filling it harms nothing else."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["chattr", "-R", "-i", str(mount_point)], check=False)
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _fill(disk):
    with open(disk / "filler", "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * (1 << 20))
                filler.flush()
        except OSError:
            pass


def _make_immutable(disk):
    # Root ignores permission bits; the immutable attribute stops even root's writes, open
    # files included.
    subprocess.run(["chattr", "-R", "+i", str(disk)], check=True)


def _snapshot_has_results(path) -> bool:
    """Whether Ray's last experiment snapshot already holds a reported val_rmse."""
    try:
        trials = ExperimentAnalysis(str(path)).trials
    except Exception:  # no snapshot yet, or one being written
        return False
    return any(t.last_result.get("val_rmse") is not None for t in trials)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [(_fill, "No space left on device"), (_make_immutable, "Operation not permitted")],
)
def test_storage_fault_stops_the_search_with_the_path_named(
    fault, reason, small_disk, ray_session, capsys
):
    path = small_disk / "quickstart"

    def strike_after_first_results():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            checkpoints = sum(1 for _ in path.glob("trial_*/checkpoint_*"))
            if checkpoints >= 2 and _snapshot_has_results(path):
                fault(small_disk)
                return
            time.sleep(0.1)

    striker = threading.Thread(target=strike_after_first_results, daemon=True)
    striker.start()
    script = load_experiment_script("quickstart")
    argv = ["--smoke-test", "--num-samples", "12", "--max-concurrent", "1"]
    argv += ["--steps-per-iteration", "2", "--max-iterations", "3"]
    with pytest.raises(SystemExit) as stop:
        main(
            "q",
            script["EXPERIMENT"],
            script["SPACE"],
            argv=[*argv, "--storage-path", str(small_disk)],
        )
    striker.join()

    assert stop.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith(f"error: storage path '{path}' cannot be written any more")
    assert reason in message

    # What was written before the fault is still an experiment Ray can read.
    subprocess.run(["chattr", "-R", "-i", str(small_disk)], check=False)
    analysis = ExperimentAnalysis(str(path))
    assert analysis.trials
    reported = [t for t in analysis.trials if t.last_result.get("val_rmse") is not None]
    assert reported


def test_study_on_a_read_only_directory_ends_the_search_at_once(small_disk):
    # Between two trials nothing runs, so only the searcher sees the fault; asking again and
    # again would hold the search for Tune's ten-minute wait.
    experiment = ExperimentConfig(name="q", storage_path=str(small_disk))
    searcher = build_searcher(experiment, SearchSpace())
    _make_immutable(small_disk)
    suggestion = searcher.suggest("first")
    failure = StorageGuard.failures.pop(experiment.experiment_path, "")
    assert suggestion == Searcher.FINISHED
    assert f"storage path '{experiment.experiment_path}' cannot be written" in failure
    assert "Operation not permitted" in failure


def test_a_transient_study_error_is_retried_not_fatal(small_disk, monkeypatch):
    experiment = ExperimentConfig(name="q", storage_path=str(small_disk))
    searcher = build_searcher(experiment, SearchSpace())

    def locked(*args, **kwargs):
        raise optuna.exceptions.StorageInternalError("database is locked")

    with monkeypatch.context() as patch:
        patch.setattr(searcher._ot_study, "ask", locked)
        assert searcher.suggest("first") is None  # the directory still takes writes
    assert experiment.experiment_path not in StorageGuard.failures
    assert searcher.suggest("first") is not None
