"""No black-hole workers: a training job's data checked on this worker before it runs, and
a worker that cannot see its jobs' data taken out of service.

The API refuses a ``data_path`` that does not exist where it can see the data root, so a
job whose path is allowed but missing under *this* worker's ``DATA_ROOT`` most likely
met a worker-side fault: a wrong ``DATA_ROOT``, a missing mount. A worker cannot tell
"never existed" from "I cannot see it", so the rule is:

- a path that breaks the sandbox rules (``..``, outside the root, a FIFO...) is the
  user's error, as everywhere (``failed``, ``user_error``, not retried);
- a path that is allowed but not visible here is this worker's fault: the attempt is
  retried with backoff (``data_unavailable``), with a reason naming the worker and its
  ``DATA_ROOT``. Attempts are counted, so a path that exists nowhere (an API that cannot
  see the data root accepted a typo) ends ``dead`` after ``max_attempts`` with that reason;
- after ``DATA_UNAVAILABLE_LIMIT`` such jobs in a row (a training job whose data is
  visible resets the count), the worker stops claiming: it stays registered and heart-
  beating with state ``out_of_service`` and a ``state_reason`` (``GET /workers``), and
  logs which setting to fix. Every ``DATA_RECHECK_S`` it looks for the last missing path
  again and, once it is visible (the mount came back), returns to service by itself.

The supervisor checks before it starts a child (no process start for a job that cannot
run); the child checks again (``locate_data``) as the backstop for a path that vanishes
in between, and exits with ``EXIT_DATA_UNAVAILABLE``, which the supervisor re-checks and
counts the same way (``after_run``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import redis

from trainyard.datapaths import DataPathError, resolve_data_path
from trainyard.engine import JobQueue
from trainyard.types import FailureKind

from .attempts import Ending
from .protocol import TrainingJobRequest

if TYPE_CHECKING:  # pydantic costs a training child ~0.4 s at start: types only
    from .config import WorkerSettings

__all__ = [
    "DATA_RECHECK_S",
    "EXIT_DATA_UNAVAILABLE",
    "OUT_OF_SERVICE",
    "DataGuard",
    "DataUnavailable",
    "StateRecord",
    "locate_data",
]

log = logging.getLogger("trainyard.worker")

OUT_OF_SERVICE = "out_of_service"  # the worker state (GET /workers) while it holds back
DATA_RECHECK_S = 30.0  # how often a worker out of service looks for the missing data again
EXIT_DATA_UNAVAILABLE = 4  # a training child's exit: its data is not visible on this worker



class DataUnavailable(Exception):
    """An allowed data path that this worker cannot see (missing or unreadable here)."""

    def __init__(self, data_path: str, data_root: Path, detail: str) -> None:
        super().__init__(f"data_path {data_path!r} is not visible here: {detail}")
        self.data_path = data_path
        self.data_root = data_root
        self.detail = detail

    def reason(self, worker_id: str) -> str:
        """The job's error: which worker, which root, and what to fix."""
        return (
            f"data_path {self.data_path!r} is not visible on worker {worker_id} "
            f"(DATA_ROOT={self.data_root}{_root_hint(self.data_root)}): {self.detail}; a wrong "
            "DATA_ROOT or a missing mount on that worker, so the job is retried (on another "
            "worker); a path that exists nowhere ends dead after max_attempts"
        )


def _root_hint(root: Path) -> str:
    """What is wrong with the root itself, when something obviously is."""
    try:
        with os.scandir(root) as entries:
            return "" if next(entries, None) is not None else ", an empty folder"
    except FileNotFoundError:
        return ", which does not exist"
    except OSError as exc:
        return f", which cannot be read: {exc.strerror or exc}"


def locate_data(data_root: Path, data_path: str) -> Path:
    """The file or folder ``data_path`` (a path, not a URL) names under ``data_root``.

    Raises ``DataPathError`` for a path no worker may use (the user's error) and
    :class:`DataUnavailable` for an allowed path this worker cannot see."""
    candidate = resolve_data_path(data_root, data_path, must_exist=False)
    root = Path(os.path.realpath(data_root))
    try:
        info = os.stat(candidate)
    except OSError as exc:
        # Properties of the path or the data, the same on every worker: the user's error.
        if exc.errno == errno.ELOOP:
            raise DataPathError(
                f"data_path {data_path!r} does not exist in the data root (a symlink loop)"
            ) from None
        if exc.errno == errno.ENAMETOOLONG:
            raise DataPathError(f"data_path cannot be used: {exc.strerror}") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise DataUnavailable(data_path, root, "no such file or folder") from None
        # EACCES, EIO, ESTALE (a dead NFS mount): also this worker's view of the data.
        raise DataUnavailable(data_path, root, exc.strerror or str(exc)) from None
    # A FIFO would block the reader forever, a device or socket is no data (as the API).
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise DataPathError(f"data_path {data_path!r} is not a regular file or a folder")
    return candidate


class StateRecord(Protocol):
    """The worker's registration as the guard uses it (``registration.Registration``)."""

    def set_state(self, state: str, job_id: str | None) -> None: ...


class DataGuard:
    """The supervisor's data check for training jobs, the count of jobs in a row whose data
    was not visible, and the out-of-service state it leads to (see the module's doc)."""

    def __init__(
        self,
        settings: WorkerSettings,
        runtime: str,
        record: StateRecord,
        queue: JobQueue,
        *,
        recheck_s: float = DATA_RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._record = record
        self._queue = queue
        self._recheck_s = recheck_s
        self._clock = clock
        self.in_a_row = 0  # training jobs in a row whose data this worker could not see
        self.reason: str | None = None  # set while out of service: why, and what to fix
        self._last_missing: str | None = None  # the data_path the re-check looks for
        self._next_recheck = 0.0

    @property
    def out_of_service(self) -> bool:
        return self.reason is not None

    # -- one job -----------------------------------------------------------------------

    def check(self, request: TrainingJobRequest) -> Ending | None:
        """Before a training child starts: None when its data is visible here, else how
        the attempt ends (failed as the user's error, or retried as this worker's)."""
        try:
            locate_data(self._settings.data_root, request.data_path)
        except DataPathError as exc:
            return Ending("failed", error=str(exc), error_kind=FailureKind.USER_ERROR)
        except DataUnavailable as exc:
            return self._unavailable(exc)
        self.in_a_row = 0
        return None

    def after_run(self, request: TrainingJobRequest, ending: Ending) -> Ending:
        """A child that ended in a retry (the backstop exit, or a crash reading its data)
        while its data is gone: counted and reported as unavailable data, like ``check``."""
        if ending.outcome != "retry" or ending.error_kind != FailureKind.CRASHED:
            return ending
        try:
            locate_data(self._settings.data_root, request.data_path)
        except DataUnavailable as exc:
            return self._unavailable(exc)
        except DataPathError:
            pass
        return ending

    def _unavailable(self, exc: DataUnavailable) -> Ending:
        reason = exc.reason(self._settings.worker_id)
        self.in_a_row += 1
        self._last_missing = exc.data_path
        log.warning("a training job's data is not visible on this worker: %s", reason,
                    extra=self._ctx(in_a_row=self.in_a_row))  # fmt: skip
        limit = self._settings.data_unavailable_limit
        if limit and self.in_a_row >= limit and self.reason is None:
            self._leave_service(exc)
        return Ending("retry", error=reason, error_kind=FailureKind.DATA_UNAVAILABLE)

    # -- out of service ----------------------------------------------------------------

    def _leave_service(self, exc: DataUnavailable) -> None:
        self.reason = (
            f"{self.in_a_row} training jobs in a row could not see their data here (last: "
            f"{exc.data_path!r}, {exc.detail}); check DATA_ROOT={exc.data_root} and its mount "
            f"on this host. Re-checked every {self._recheck_s:g} s; the worker returns to "
            "service once that path is visible"
        )
        self._next_recheck = self._clock() + self._recheck_s
        log.error("out of service: claiming no more jobs: %s", self.reason,
                  extra=self._ctx(setting="DATA_ROOT", data_root=str(exc.data_root)))  # fmt: skip
        self._record.set_state(OUT_OF_SERVICE, None)
        self._publish(OUT_OF_SERVICE, self.reason)

    def paused(self) -> bool:
        """Whether the worker holds back from claiming now. Out of service, it re-checks
        the last missing path when due and returns to service once it is visible."""
        if self.reason is None:
            return False
        now = self._clock()
        if now >= self._next_recheck:
            self._next_recheck = now + self._recheck_s
            if self._visible_again():
                log.info("back in service: the data is visible again",
                         extra=self._ctx(data_path=self._last_missing))  # fmt: skip
                self.reason, self.in_a_row = None, 0
                self._record.set_state("idle", None)
                self._publish("idle", "")
                return False
            # Again: a registration that expired (a long Redis outage) lost the reason.
            self._publish(OUT_OF_SERVICE, self.reason)
        self._record.set_state(OUT_OF_SERVICE, None)
        return True

    def _visible_again(self) -> bool:
        if self._last_missing is None:
            return True
        try:
            locate_data(self._settings.data_root, self._last_missing)
        except DataUnavailable:
            return False
        except DataPathError:
            pass  # there, though no job can use it: the root is visible again
        return True

    def _publish(self, state: str, reason: str) -> None:
        """The state and its reason in the worker's record (GET /workers): a heartbeat of
        those fields only; the full heartbeats keep the reason (they do not write it)."""
        fields = {"runtime": self._runtime, "state": state, "state_reason": reason}
        with contextlib.suppress(redis.RedisError):
            self._queue.heartbeat(self._settings.worker_id, fields,
                                  int(self._settings.worker_ttl_s * 1000))  # fmt: skip

    def _ctx(self, **fields: Any) -> dict[str, Any]:
        return {"fields": {"worker_id": self._settings.worker_id, **fields}}
