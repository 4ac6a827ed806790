"""The backend's data root: by default data/ in the checkout wherever the API is started
from (``TRAINYARD_HOME`` moves it), filled with the sample data at start when missing;
an explicit ``DATA_ROOT`` is taken as given (relative: from the working directory) and
never filled. ``data_path`` existence is checked only where the API sees the root."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from trainyard.embedded import EmbeddedServer
from trainyard.paths import HOME_ENV
from trainyard.sample_data import CIFAR10_FOLDER, IMAGE_FOLDER, TABULAR_FILE, TEXT_FILE
from trainyard.seed_examples import TRAINING_BODIES
from trainyard_api.app import create_app
from trainyard_api.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
RF = TRAINING_BODIES["random_forest"]
SAMPLES = {TABULAR_FILE, TEXT_FILE, IMAGE_FOLDER, CIFAR10_FOLDER}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DATA_ROOT", HOME_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # not the checkout, not backend/


@pytest.fixture
def start_log() -> Iterator[list[str]]:
    """What the app logs at start (uvicorn's logger, which the backend writes to)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def _settings(server: EmbeddedServer, **values: Any) -> Settings:
    return Settings(redis_url=server.url, _env_file=None, **values)  # type: ignore[call-arg]


def test_the_default_is_data_in_the_checkout_whatever_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for cwd in (tmp_path, REPO_ROOT / "backend", REPO_ROOT):
        monkeypatch.chdir(cwd)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.data_root == REPO_ROOT / "data"
        assert settings.data_root_is_default


def test_trainyard_home_moves_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.data_root == tmp_path / "home" / "data"
    assert settings.data_root_is_default


def test_an_explicit_relative_data_root_is_from_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))  # explicit wins over it
    monkeypatch.setenv("DATA_ROOT", "mydata")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.data_root == tmp_path / "mydata"
    assert not settings.data_root_is_default
    assert not Settings(data_root=tmp_path, _env_file=None).data_root_is_default  # type: ignore[call-arg]


def test_a_missing_default_root_gets_the_samples_at_start_and_paths_are_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: EmbeddedServer,
    redis_client: Redis, start_log: list[str],
) -> None:  # fmt: skip
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    root = tmp_path / "home" / "data"
    app = create_app(_settings(server))
    assert not root.exists()  # building the app writes nothing; starting it does
    with TestClient(app) as client:
        assert {p.name for p in root.iterdir()} >= SAMPLES
        (line,) = [m for m in start_log if "sample data" in m]
        assert f"its default {root} did not exist: wrote the sample data" in line
        assert client.post("/jobs/training", json=RF).status_code == 202  # the seed's, verbatim
        missing = client.post("/jobs/training", json={**RF, "data_path": "/data/nope.csv"})
        assert missing.status_code == 422, missing.text
        error = missing.json()["error"]
        assert error["details"][0]["field"] == "data_path"
        assert "'/data/nope.csv' does not exist in the data root" in error["message"]


def test_an_existing_default_root_is_not_filled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: EmbeddedServer,
    redis_client: Redis, start_log: list[str],
) -> None:  # fmt: skip
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    (tmp_path / "data").mkdir()
    with TestClient(create_app(_settings(server))):
        assert list((tmp_path / "data").iterdir()) == []
    assert not [m for m in start_log if "sample data" in m]


def test_a_missing_explicit_root_is_not_filled_and_paths_are_checked_for_shape_only(
    tmp_path: Path, server: EmbeddedServer, redis_client: Redis, start_log: list[str]
) -> None:
    root = tmp_path / "mounted-later"
    with TestClient(create_app(_settings(server, data_root=root))) as client:
        assert not root.exists()
        # Not seen here, so not called missing: the worker checks it against its root.
        absent = client.post("/jobs/training", json={**RF, "data_path": "/data/x.csv"})
        assert absent.status_code == 202, absent.text
        dots = client.post("/jobs/training", json={**RF, "data_path": "/data/../x.csv"})
        assert dots.status_code == 422 and "'..'" in dots.json()["error"]["message"]
    assert not [m for m in start_log if "sample data" in m]


def test_a_root_the_api_may_not_read_is_not_called_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: EmbeddedServer, redis_client: Redis
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        # What a folder of another user with mode 0700 looks like (root passes every check).
        return False if Path(path) == root else real_access(path, mode, **kwargs)

    body = {**RF, "data_path": "/data/x.csv"}
    with TestClient(create_app(_settings(server, data_root=root))) as client:
        assert client.post("/jobs/training", json=body).status_code == 422  # seen: missing
        monkeypatch.setattr(os, "access", access)
        assert client.post("/jobs/training", json=body).status_code == 202  # not seen: shape


def test_the_setting_says_where_existence_is_checked() -> None:
    description = Settings.model_fields["data_root"].description or ""
    assert "checkout" in description and "TRAINYARD_HOME" in description
    assert "cannot see" in description and "only checked for shape" in description
