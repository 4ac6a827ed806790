"""``python src/worker.py``: check the runtime, then supervise until stopped."""

from __future__ import annotations

import os
import sys

from pydantic import ValidationError

from trainyard.logs import setup_logging

from .config import WorkerSettings
from .runtime_check import RuntimeMismatch, check_gpus, check_runtime
from .supervisor import Supervisor

__all__ = ["main"]


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
