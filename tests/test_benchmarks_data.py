"""The data-throughput benchmark runs end to end; its timings are never pass/fail here."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_results():
    # A separate process: the benchmark sets torch's thread count and times the whole process.
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.data_throughput", "--smoke", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, completed.stdout  # --json prints exactly one object
    return json.loads(lines[0])


def _positive_finite(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_smoke_json_reports_seed_and_ours_in_samples_per_second(smoke_results):
    assert _positive_finite(smoke_results["seed_samples_per_s"])
    ours = smoke_results["ours_samples_per_s"]
    assert set(ours) == {"64", "256"}
    assert all(_positive_finite(value) for value in ours.values())


def test_smoke_json_reports_the_ratio_per_batch_size(smoke_results):
    ratio = smoke_results["ratio"]
    assert set(ratio) == set(smoke_results["ours_samples_per_s"])
    assert all(_positive_finite(value) for value in ratio.values())
    # Each round's ratio is that round's ours / seed; the reported one is their median.
    for batch, rounds in smoke_results["ratio_rounds"].items():
        assert len(rounds) == smoke_results["rounds"] == 2
        assert min(rounds) <= ratio[batch] <= max(rounds)


def test_smoke_json_says_whether_the_gpu_was_measured(smoke_results):
    cuda = smoke_results["cuda"]
    if cuda is None:
        assert "unmeasured" in smoke_results["cuda_note"]
    else:
        assert all(_positive_finite(value) for value in cuda["samples_per_s"].values())


@pytest.mark.parametrize("argument", [["--rounds", "0"], ["--seconds", "-1"]])
def test_bad_arguments_are_refused_before_any_timing(argument):
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.data_throughput", *argument],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2
    assert argument[0] in completed.stderr
