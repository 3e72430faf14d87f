import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_session():
    """One small local Ray per test module that needs it, stopped when the module ends."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def load_experiment_script(name: str) -> dict:
    """The module globals of `experiments/<name>.py`, without running its search."""
    return runpy.run_path(str(ROOT / "experiments" / f"{name}.py"), run_name="experiment")
