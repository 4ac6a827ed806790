"""The worker's settings, from environment variables (and an optional ``.env``)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainyard.paths import default_paths

if TYPE_CHECKING:
    from .gpu import GpuSet

__all__ = ["WorkerSettings", "child_environment"]


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    worker_type: str = Field(..., description="the runtime this worker serves, e.g. sklearn")
    model_framework: str | None = Field(
        None, description="the framework family; must match the runtime's if set"
    )
    use_gpu: bool = Field(False, description="true for a -gpu runtime; must match the runtime")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="the queue's Redis")
    trainyard_namespace: str = Field("trainyard", description="key namespace in Redis")
    # Defaults: in the checkout the code runs from (or $TRAINYARD_HOME), wherever the worker
    # is started from; see trainyard.paths. A relative value set here is from the cwd.
    data_root: Path = Field(
        default_factory=lambda: default_paths(__file__).data_root,
        description="where data_path values resolve (default: data/ in the checkout)",
    )
    model_store: Path = Field(
        default_factory=lambda: default_paths(__file__).model_store,
        description="model artifact folder (default: var/models in the checkout)",
    )
    work_dir: Path = Field(
        default_factory=lambda: default_paths(__file__).work_dir,
        description="per-attempt scratch folders (default: var/work in the checkout)",
    )
    worker_id: str = Field(default_factory=_default_worker_id)
    lease_s: float = Field(30.0, gt=0, description="a claimed job's lease length")
    renew_every_s: float = Field(5.0, gt=0, description="how often the lease is renewed")
    heartbeat_s: float = Field(5.0, gt=0, description="registration refresh interval")
    worker_ttl_s: float = Field(20.0, gt=0, description="a silent worker counts as gone after")
    reap_every_s: float = Field(5.0, gt=0, description="how often this worker reaps leases")
    block_s: float = Field(5.0, gt=0, le=60, description="longest idle wait for a wake-up")
    kill_grace_s: float = Field(5.0, ge=0, description="SIGTERM to SIGKILL grace for a job")
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="on SIGTERM, how long the running job may finish before hand-back"
    )
    backoff_base_s: float = Field(2.0, ge=0, description="first retry delay (doubles each time)")
    backoff_cap_s: float = Field(300.0, ge=0, description="longest retry delay")
    inference_cache_models: int = Field(4, ge=1, description="models kept loaded (LRU)")
    job_memory_mb: int | None = Field(
        None, ge=64, description="per training job memory limit (heap); beyond it the job fails"
    )
    gpu_devices: str | None = Field(
        None, description="GPU runtimes: the GPUs (indexes or UUIDs, comma-separated) to use"
    )
    nvidia_smi: str = Field("nvidia-smi", description="the nvidia-smi binary")
    gpu_clean_timeout_s: float = Field(
        15.0, gt=0, description="after a GPU job, how long its memory may take to be freed"
    )
    gpu_memory_tolerance_mb: int = Field(
        256, ge=0, description="GPU memory a finished job may leave in use without a verdict"
    )
    job_threads: int | None = Field(
        None, ge=1, description="OMP/MKL threads per job (default: leave the environment's)"
    )
    fork_server: bool = Field(
        True,
        description="start training jobs by forking a warm process that has imported the "
        "framework (false: a fresh interpreter per job, which pays the imports each time)",
    )
    max_batch_size: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="most inference jobs of one model run as one batch (1: no batching; "
        "default: per model type, see inference_batch.py)",
    )
    max_batch_wait_ms: float | None = Field(
        None,
        ge=0,
        le=1000,
        description="how long a batch that found more jobs of its model waiting waits for "
        "still more before it runs; a lone job never waits (default: per model type, see "
        "inference_batch.py)",
    )
    affinity_ms: int = Field(
        50,
        ge=0,
        le=60_000,
        description="an inference job waits this long for a worker that has its model "
        "loaded before any worker takes it (0: no affinity)",
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="serve this worker's Prometheus metrics on this port (0: off); see "
        "worker_metrics.py",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="the address the metrics port binds (0.0.0.0: every interface, as a "
        "Prometheus on another host or pod needs)",
    )
    data_unavailable_limit: int = Field(
        3,
        ge=0,
        description="after this many training jobs in a row whose data_path this worker "
        "cannot see (under DATA_ROOT), it takes itself out of service (0: never); see "
        "data_guard.py",
    )

    @field_validator("data_root", "model_store", "work_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Taken from the working directory once, at start, as the backend does.
        return value.expanduser().absolute()

    def is_default(self, field: str) -> bool:
        """True when the setting ``field`` was not set (environment, .env or argument):
        only a default folder may be filled (sample data) or created without asking."""
        return field not in self.model_fields_set

    @model_validator(mode="after")
    def _lease_timing(self) -> WorkerSettings:
        # A lease renewed less often than a third of its length can expire on one slow renew.
        if self.renew_every_s > self.lease_s / 3:
            raise ValueError(
                f"renew_every_s ({self.renew_every_s}) must be at most lease_s/3 "
                f"({self.lease_s / 3:.3g})"
            )
        return self


def child_environment(settings: WorkerSettings, gpus: GpuSet | None) -> dict[str, str]:
    """The environment of the job processes (training children and the inference host)."""
    from .runtimes.base import DATA_ROOT_ENV, DEVICE_ENV

    env = dict(os.environ)
    if settings.job_threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(settings.job_threads)
    src = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    # Nothing is downloaded at run time: Hugging Face stays offline.
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env[DATA_ROOT_ENV] = str(settings.data_root.resolve())
    env[DEVICE_ENV] = "cuda" if gpus else "cpu"
    # A CPU runtime's jobs see no GPU at all; a GPU runtime's see only its healthy ones.
    env["CUDA_VISIBLE_DEVICES"] = gpus.visible_devices() if gpus else ""
    return env
