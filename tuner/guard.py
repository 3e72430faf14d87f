"""Stopping a search cleanly when its storage path stops accepting writes."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, ClassVar

from ray import tune

__all__ = ["StorageError", "StorageGuard"]

logger = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """The experiment directory stopped accepting writes in the middle of a search."""


class StorageGuard(tune.Callback, tune.Stopper):
    """Ends the search cleanly, naming the path, once the experiment directory rejects a write.

    Without it, a full or read-only disk shows up as trials failing one by one, with retries,
    while Ray's snapshots of the experiment are cut short mid-file. The guard keeps a reserve
    file of `reserve_bytes` in the experiment directory. A probe write (at most one per
    `period_s`) that fails releases the reserve and stops every trial, so the final snapshot of
    the experiment state still finds room and the directory stays readable.
    """

    RESERVE = ".circletune-reserve"
    # Failures by experiment path, read by run_search: the guard that runs is the Tuner's own
    # copy (unpickled from the experiment directory after a restore), not one we hold.
    failures: ClassVar[dict[str, str]] = {}

    def __init__(self, path: str, period_s: float = 1.0, reserve_bytes: int = 32 << 20) -> None:
        self.path = Path(path)
        self.period_s = period_s
        self.reserve_bytes = reserve_bytes
        self.error: str | None = None
        self._last = 0.0

    def setup(self, **info: Any) -> None:
        reserve = self.path / self.RESERVE
        if not reserve.exists():
            with open(reserve, "wb") as file:
                file.truncate(0)
                chunk = b"\0" * (1 << 20)
                for _ in range(self.reserve_bytes >> 20):
                    file.write(chunk)

    def check(self) -> str | None:
        """Why the experiment directory rejects a small write now, or None if it takes it."""
        probe = self.path / ".circletune-probe"
        try:
            probe.write_bytes(b"ok" * 512)
            probe.unlink()
        except OSError as error:
            return (
                f"storage path {str(self.path)!r} cannot be written any more "
                f"({error.strerror or error}); what was written before stays readable there. "
                f"Free space or restore write access, then rerun with --resume"
            )
        return None

    def probe(self) -> str | None:
        """`check` now; a failure is recorded for `run_search` and releases the reserve."""
        error = self.check()
        if error is not None:
            logger.error("%s", error)
            StorageGuard.failures[str(self.path)] = error
            with contextlib.suppress(OSError):  # a read-only directory has nothing to free
                (self.path / self.RESERVE).unlink(missing_ok=True)
        return error

    def _watch(self, now: bool = False) -> None:
        if self.error is not None or (not now and time.monotonic() - self._last < self.period_s):
            return
        self._last = time.monotonic()
        self.error = self.probe()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._watch()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._watch(now=True)  # a failing trial may be the first sign

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.error is not None

    def stop_all(self) -> bool:
        return self.error is not None


# What Optuna's RDB storage raises when its database file cannot be written (disk full,
# read-only); the search stops through StorageGuard rather than crash the driver mid-write.
