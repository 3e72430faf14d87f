"""A real multi-node Ray cluster on this machine: a head and two worker nodes, each with its
own raylet. The experiment script joins it with --address, as it would join a cloud cluster.
"""

import json
import threading
import time
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster
from ray.tune import ExperimentAnalysis

from tests.conftest import load_experiment_script
from tuner import cli
from tuner.experiment import main

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    # The head takes no trials, as on a real cluster; each worker node holds one trial.
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


def _run_quickstart(address: str, storage: Path, name: str, *extra: str):
    script = load_experiment_script("quickstart")
    argv = ["--smoke-test", "--address", address, "--storage-path", str(storage)]
    return main("q", script["EXPERIMENT"], script["SPACE"], argv=[*argv, "--name", name, *extra])


def _reports(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_trials_spread_over_worker_nodes(cluster, tmp_path, capsys):
    cluster, workers = cluster
    results = _run_quickstart(cluster.address, tmp_path, "spread", "--num-samples", "6")

    assert results.num_errors == 0 and len(results) == 6
    nodes = {r.metrics["node_id"] for r in results}
    assert len(nodes) >= 2
    assert nodes <= {w.node_id for w in workers}, "a trial ran on the head"

    # Each trial's TensorBoard file reached the experiment directory from its node.
    for result in results:
        assert list(Path(result.path).glob("events.out.tfevents.*")), result.path

    # The inspection command reads the outcome.
    capsys.readouterr()
    assert cli.main(["results", str(tmp_path / "spread"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    best = results.get_best_result("val_rmse", "min")
    assert report["best"]["trial_id"] == best.metrics["trial_id"]
    assert len(report["trials"]) == 6


def test_lost_node_trials_continue_from_checkpoint_elsewhere(cluster, tmp_path):
    cluster, workers = cluster
    path = tmp_path / "lost"
    lost = {}

    def remove_a_busy_node():
        # Wait until some trial has checkpointed on a worker, then take that node away.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not lost:
            for trial_dir in path.glob("trial_*"):
                reports = _reports(trial_dir)
                if reports and any(trial_dir.glob("checkpoint_*")):
                    node = next(w for w in workers if w.node_id == reports[-1]["node_id"])
                    lost.update(trial=trial_dir.name, node=node.node_id, reports=len(reports))
                    cluster.remove_node(node)
                    return
            time.sleep(0.1)

    remover = threading.Thread(target=remove_a_busy_node, daemon=True)
    remover.start()
    # Long enough trials that the node goes while one of them is mid-way.
    results = _run_quickstart(
        cluster.address,
        tmp_path,
        "lost",
        "--num-samples", "3",
        "--steps-per-iteration", "6",
        "--max-iterations", "4",
        "--no-early-stopping",  # the trial that loses its node must still have steps to run
    )  # fmt: skip
    remover.join()
    assert lost, "no node was removed"

    # Every trial is accounted for and none errored: the lost one was retried elsewhere.
    analysis = ExperimentAnalysis(str(path))
    assert len(analysis.trials) == 3
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    assert results.num_errors == 0

    reports = _reports(path / lost["trial"])
    survivors = [r for r in reports if r["node_id"] != lost["node"]]
    assert survivors, "the trial never ran again after its node was removed"
    # It continued from a checkpoint: its optimiser step count did not start over.
    first_after = survivors[0]
    steps_per_iteration = 6
    assert first_after["step"] > steps_per_iteration
    assert first_after["step"] == first_after["training_iteration"] * steps_per_iteration
