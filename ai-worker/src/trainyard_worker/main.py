"""``python src/worker.py``: check the runtime and the folders, then supervise until
stopped. Every start refusal exits with code 2 and a line naming what to fix."""

from __future__ import annotations

import logging
import os
import sys

from pydantic import ValidationError

from trainyard.logs import setup_logging
from trainyard.paths import write_samples_into_missing_default

from .config import WorkerSettings
from .runtime_check import (
    RuntimeMismatch,
    StorageProblem,
    StorageReport,
    check_gpus,
    check_runtime,
    check_storage,
)
from .supervisor import Supervisor

__all__ = ["main", "prepare_storage"]

log = logging.getLogger("trainyard.worker")


def prepare_storage(settings: WorkerSettings) -> StorageReport:
    """Fill a missing *default* data root with the sample data (a first start from a fresh
    checkout), then check the folders (``check_storage``); logs what it did."""
    if settings.is_default("data_root"):
        wrote = write_samples_into_missing_default(settings.data_root)
        if wrote is not None:
            log.log(logging.INFO if wrote.ok else logging.WARNING, "%s", wrote.message)
    report = check_storage(settings)
    for line in report.created:
        log.info("%s", line)
    for line in report.warnings:
        log.warning("%s", line)
    return report


def main() -> int:
    setup_logging(
        os.environ.get("LOG_LEVEL", "INFO"), os.environ.get("LOG_FORMAT", "json") == "json"
    )
    try:
        settings = WorkerSettings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as exc:
        print(f"worker: bad configuration:\n{exc}", file=sys.stderr)
        return 2
    try:
        report = check_runtime(settings.worker_type, settings.model_framework, settings.use_gpu)
        gpus = None
        if report.runtime.device == "gpu":
            gpus = check_gpus(report.runtime, settings.nvidia_smi, settings.gpu_devices)
    except RuntimeMismatch as exc:
        print(f"worker: refusing to start: {exc}", file=sys.stderr)
        return 2
    try:
        prepare_storage(settings)
    except StorageProblem as exc:
        print(f"worker: refusing to start: {exc}", file=sys.stderr)
        return 2
    supervisor = Supervisor(settings, report, gpus)
    if settings.metrics_port:
        try:
            supervisor.metrics.serve(settings.metrics_host, settings.metrics_port)
        except OSError as exc:  # taken, or not an address of this host
            print(f"worker: refusing to start: METRICS_PORT {settings.metrics_port} on "
                  f"{settings.metrics_host}: {exc}", file=sys.stderr)  # fmt: skip
            return 2
    try:
        return supervisor.run()
    finally:
        supervisor.metrics.close()
