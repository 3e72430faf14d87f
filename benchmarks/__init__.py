"""Measured comparisons, run as scripts (`python -m benchmarks.<name>`); never pass/fail tests."""
