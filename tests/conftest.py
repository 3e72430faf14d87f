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


def session_processes(session_id: int) -> list[int]:
    """Ids of the live processes in a session (the tree a driver started with its own Ray)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, session, ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session_id and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def kill_session(session_id: int) -> None:
    """SIGKILL every process of a session this test started, by id, and wait for them."""
    import os
    import signal
    import time

    for pid in session_processes(session_id):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while session_processes(session_id) and time.monotonic() < deadline:
        time.sleep(0.2)
