"""A worker's start check of its folders: the data root readable, the model store and the
scratch folder writable (created when they are the defaults, or when only their last part
is missing); otherwise it refuses to start (exit 2) naming the setting to fix. Defaults sit
in the checkout (or ``TRAINYARD_HOME``) wherever the worker starts, and a missing default
data root gets the sample data. Checked by calling the check and with real processes."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import WORKER_DIR
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.paths import HOME_ENV
from trainyard.sample_data import TABULAR_FILE
from trainyard.testing import stop_gracefully, wait_for
from trainyard_worker.config import WorkerSettings
from trainyard_worker.main import prepare_storage
from trainyard_worker.runtime_check import StorageProblem, check_storage

REPO_ROOT = WORKER_DIR.parent
FOLDER_SETTINGS = ("DATA_ROOT", "MODEL_STORE", "WORK_DIR", HOME_ENV)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in FOLDER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _settings(**values: object) -> WorkerSettings:
    return WorkerSettings(worker_type="sklearn", _env_file=None, **values)  # type: ignore[call-arg]


def _data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / TABULAR_FILE).write_text("a,label\n1,x\n")
    return root


def test_defaults_are_in_the_checkout_whatever_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for cwd in (tmp_path, WORKER_DIR, REPO_ROOT):
        monkeypatch.chdir(cwd)
        s = _settings()
        assert (s.data_root, s.model_store, s.work_dir) == (
            REPO_ROOT / "data", REPO_ROOT / "var/models", REPO_ROOT / "var/work",
        )  # fmt: skip
        assert s.is_default("data_root") and s.is_default("model_store")


def test_explicit_values_win_and_relative_ones_are_from_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    monkeypatch.setenv("DATA_ROOT", "d")
    monkeypatch.setenv("MODEL_STORE", "m")
    s = _settings()
    assert (s.data_root, s.model_store) == (tmp_path / "d", tmp_path / "m")
    assert s.work_dir == tmp_path / "home/var/work"
    assert not s.is_default("data_root") and not s.is_default("model_store")
    assert s.is_default("work_dir")


def test_a_first_start_fills_the_default_data_root_and_creates_the_folders(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv(HOME_ENV, str(home))
    caplog.set_level(logging.INFO, logger="trainyard.worker")
    report = prepare_storage(_settings())
    assert (home / "data" / TABULAR_FILE).is_file()
    assert (home / "var/models").is_dir() and (home / "var/work").is_dir()
    assert report.created == [
        f"MODEL_STORE: created the default folder {home / 'var/models'}",
        f"WORK_DIR: created the default folder {home / 'var/work'}",
    ]
    assert report.warnings == []
    logged = [r.getMessage() for r in caplog.records]
    assert any(f"its default {home / 'data'} did not exist: wrote the sample" in m for m in logged)
    # A second start finds everything in place: nothing written, nothing said.
    caplog.clear()
    assert prepare_storage(_settings()).created == []
    assert not [r for r in caplog.records if "sample data" in r.getMessage()]


def test_an_explicit_store_is_created_only_when_its_parent_exists(tmp_path: Path) -> None:
    data = _data(tmp_path)
    report = check_storage(_settings(data_root=data, model_store=tmp_path / "models",
                                     work_dir=tmp_path / "work"))  # fmt: skip
    assert (tmp_path / "models").is_dir()
    assert report.created[0] == f"MODEL_STORE: created the folder {tmp_path / 'models'}"
    deep = tmp_path / "not-mounted" / "models"
    refused = rf"^MODEL_STORE={re.escape(str(deep))} does not exist, nor does its parent"
    with pytest.raises(StorageProblem, match=refused):
        check_storage(_settings(data_root=data, model_store=deep, work_dir=tmp_path / "work"))
    assert not deep.parent.exists()


@pytest.mark.parametrize("setting", ["DATA_ROOT", "MODEL_STORE", "WORK_DIR"])
def test_a_file_where_a_folder_belongs_is_refused(tmp_path: Path, setting: str) -> None:
    values = {"data_root": _data(tmp_path), "model_store": tmp_path / "m",
              "work_dir": tmp_path / "w"}  # fmt: skip
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    values[setting.lower()] = blocker
    refused = rf"^{setting}={re.escape(str(blocker))} is not a folder; set {setting} "
    with pytest.raises(StorageProblem, match=refused):
        check_storage(_settings(**values))


def test_an_explicit_data_root_that_is_missing_is_refused_and_not_filled(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    with pytest.raises(StorageProblem) as refused:
        prepare_storage(_settings(data_root=missing, model_store=tmp_path / "m"))
    assert str(refused.value).startswith(f"DATA_ROOT={missing} does not exist; set DATA_ROOT to")
    assert not missing.exists()


def test_an_empty_data_root_is_allowed_with_a_warning(tmp_path: Path) -> None:
    # A volume mounted later, or data copied in after start: not a reason to refuse.
    (tmp_path / "empty").mkdir()
    report = check_storage(_settings(data_root=tmp_path / "empty", model_store=tmp_path / "m"))
    assert report.warnings == [
        f"DATA_ROOT={tmp_path / 'empty'} is empty: every training job will fail until data is there"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any folder")
def test_folders_this_user_may_not_use_are_refused(tmp_path: Path) -> None:
    data, store = _data(tmp_path), tmp_path / "store"
    store.mkdir(mode=0o500)
    with pytest.raises(StorageProblem, match=r"MODEL_STORE=.* cannot be read and written"):
        check_storage(_settings(data_root=data, model_store=store))
    data.chmod(0o000)
    try:
        with pytest.raises(StorageProblem, match=r"DATA_ROOT=.* cannot be read by this worker"):
            check_storage(_settings(data_root=data, model_store=tmp_path / "m"))
    finally:
        data.chmod(0o700)


# -- real processes ---------------------------------------------------------------------


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOLDER_SETTINGS}
    return {**env, "WORKER_TYPE": "sklearn", "MODEL_FRAMEWORK": "sklearn",
            "LOG_FORMAT": "text", **values}  # fmt: skip


def _refusal(**values: str) -> str:
    done = subprocess.run(
        [sys.executable, "src/worker.py"], cwd=WORKER_DIR, capture_output=True, text=True,
        timeout=60, env=_env(REDIS_URL="redis://127.0.0.1:1/0", **values),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    return done.stderr


def test_a_worker_process_refuses_a_missing_data_root(tmp_path: Path) -> None:
    stderr = _refusal(DATA_ROOT=str(tmp_path / "nope"), MODEL_STORE=str(tmp_path / "m"),
                      WORK_DIR=str(tmp_path / "w"))  # fmt: skip
    assert f"worker: refusing to start: DATA_ROOT={tmp_path / 'nope'} does not exist" in stderr
    assert not (tmp_path / "nope").exists()


def test_a_worker_process_refuses_a_model_store_it_cannot_make(tmp_path: Path) -> None:
    store = tmp_path / "unmounted" / "models"
    stderr = _refusal(DATA_ROOT=str(_data(tmp_path)), MODEL_STORE=str(store),
                      WORK_DIR=str(tmp_path / "w"))  # fmt: skip
    assert f"worker: refusing to start: MODEL_STORE={store} does not exist" in stderr
    assert "set MODEL_STORE to a folder" in stderr


def test_a_worker_process_started_with_no_folder_settings_uses_the_defaults(
    tmp_path: Path, server: EmbeddedServer, queue: JobQueue
) -> None:
    home = tmp_path / "home"
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "src/worker.py"], cwd=WORKER_DIR, stdout=out, stderr=out,
            env=_env(REDIS_URL=server.url, **{HOME_ENV: str(home)}, WORKER_ID="w-defaults"),
        )  # fmt: skip
    try:
        wait_for(lambda: proc.poll() is not None or queue.live_workers(20_000), 90,
                 "the worker to register")  # fmt: skip
        assert proc.poll() is None, log.read_text()
        assert (home / "data" / TABULAR_FILE).is_file()
        assert (home / "var/models").is_dir() and (home / "var/work").is_dir()
        text = log.read_text()
        assert f"its default {home / 'data'} did not exist: wrote the sample data" in text
    finally:
        stop_gracefully(proc)
