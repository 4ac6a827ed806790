"""Settings, read from the environment (and an optional ``.env`` file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trainyard.paths import default_paths

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every knob of the API. Environment variable names are the field names in upper case
    (``REDIS_URL``, ``DATA_ROOT``, ...)."""

    # hide_input_in_errors: a refused setting must not print the API keys it was given.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="the Redis (or Valkey) server holding the queue"
    )
    trainyard_namespace: str = Field(
        "trainyard",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="key namespace (hash tag) in Redis; API and workers must agree on it",
    )
    data_root: Path = Field(
        default_factory=lambda: default_paths(__file__).data_root,
        description="the folder that /data/... paths in job requests refer to. Default: data/ "
        "in the checkout the code runs from (in $TRAINYARD_HOME when that is set; ./data "
        "outside a checkout), filled with the sample data at start when it does not exist; "
        "a relative value set here is taken from the working directory. Where this process "
        "cannot see the folder (not a folder here, or not readable), data paths are only "
        "checked for shape (no '..', inside /data) and the worker checks existence",
    )
    worker_ttl_s: float = Field(
        20.0, gt=0, description="a worker silent (no heartbeat) this long is not counted as live"
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="largest request body accepted; larger gets 413"
    )
    default_training_timeout_s: float = Field(
        86400.0, gt=0, description="run timeout of one training attempt when the body sets none"
    )
    default_inference_timeout_s: float = Field(
        300.0, gt=0, description="run timeout of one inference attempt when the body sets none"
    )
    default_training_max_attempts: int = Field(
        3, ge=1, le=20, description="attempts of a training job when the body sets none"
    )
    default_inference_max_attempts: int = Field(
        2, ge=1, le=20, description="attempts of an inference job when the body sets none"
    )
    max_wait_s: float = Field(
        300.0,
        ge=0,
        description="longest ?wait= a client may ask POST /jobs/training or /jobs/inference for",
    )
    sse_keepalive_s: float = Field(
        5.0,
        gt=0,
        le=25,
        description="idle time after which an event stream sends a keepalive comment; also how "
        "long one blocking read waits (must stay below the Redis socket timeout, 30 s)",
    )

    threadpool_size: int = Field(
        100,
        ge=4,
        le=10_000,
        description="threads for sync routes (AnyIO's default is 40); event streams and "
        "?wait= hold none while they wait (they use the asyncio client and one shared reader)",
    )

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="API keys, comma-separated (API_KEYS=key1,key2). With at least one key (here "
        "or in api_keys_file), every route except /health and the docs needs one; none: the API "
        "is open (the local default)",
    )
    api_keys_file: Path | None = Field(
        None,
        description="a file with more API keys, one per line ('#' comments), e.g. a mounted "
        "secret; read once at start",
    )
    require_api_keys: bool = Field(
        False,
        description="refuse to start without an API key (the production configurations set it, "
        "so a missing secret fails closed instead of leaving the API open)",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @model_validator(mode="after")
    def _load_keys(self) -> Settings:
        if self.api_keys_file is not None:
            try:
                lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ValueError(f"api_keys_file: cannot read it: {exc.strerror}") from exc
            extra = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            self.api_keys = [*self.api_keys, *(SecretStr(k) for k in extra)]
        for key in self.api_keys:
            plain = key.get_secret_value()
            # A short key can be guessed; whitespace is a copy-paste accident.
            if len(plain) < 16 or any(c.isspace() for c in plain):
                raise ValueError(
                    "api_keys: every key must be at least 16 characters without spaces "
                    "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        if self.require_api_keys and not self.api_keys:
            raise ValueError(
                "require_api_keys is set but no API key is configured: set API_KEYS or "
                "API_KEYS_FILE"
            )
        return self

    @field_validator("data_root")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Resolve once at start so a later chdir cannot move the root under us.
        return value.expanduser().absolute()

    @property
    def data_root_is_default(self) -> bool:
        """True when DATA_ROOT was not set (environment, .env or argument): only then may
        the start write the sample data into a missing data root."""
        return "data_root" not in self.model_fields_set
