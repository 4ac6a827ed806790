"""The default folders (``trainyard.paths``): found from the code's own place in a
checkout whatever the working directory, ``TRAINYARD_HOME`` over it, the working
directory outside a checkout; and the sample data written only into a missing root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainyard import paths
from trainyard.paths import (
    HOME_ENV,
    DefaultPaths,
    default_paths,
    find_checkout,
    write_samples_into_missing_default,
)
from trainyard.sample_data import TABULAR_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]


def _fake_checkout(root: Path) -> Path:
    for part in ("core", "backend", "ai-worker"):
        (root / part).mkdir(parents=True)
        (root / part / "pyproject.toml").write_text("[project]\n")
    module = root / "backend" / "src" / "pkg" / "config.py"
    module.parent.mkdir(parents=True)
    module.write_text("")
    return module


@pytest.fixture(autouse=True)
def _no_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)


def test_the_checkout_is_found_from_a_file_deep_inside_it(tmp_path: Path) -> None:
    module = _fake_checkout(tmp_path / "clone")
    assert find_checkout(module) == (tmp_path / "clone").resolve()
    assert find_checkout(tmp_path / "clone") == (tmp_path / "clone").resolve()
    assert find_checkout(tmp_path) is None


def test_a_folder_with_only_some_parts_is_no_checkout(tmp_path: Path) -> None:
    # The backend image holds /app/core and /app/backend only: not a checkout.
    module = _fake_checkout(tmp_path / "app")
    (tmp_path / "app" / "ai-worker" / "pyproject.toml").unlink()
    assert find_checkout(module) is None


def test_a_symlinked_file_counts_where_it_really_is(tmp_path: Path) -> None:
    module = _fake_checkout(tmp_path / "clone")
    link = tmp_path / "elsewhere" / "config.py"
    link.parent.mkdir()
    link.symlink_to(module)
    assert find_checkout(link) == (tmp_path / "clone").resolve()


def test_defaults_are_under_the_checkout_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _fake_checkout(tmp_path / "clone")
    clone = (tmp_path / "clone").resolve()
    for cwd in (tmp_path, clone / "backend", clone / "ai-worker"):
        monkeypatch.chdir(cwd)
        found = default_paths(module)
        assert found == DefaultPaths(clone, "checkout", clone / "data", clone / "var")
        assert found.model_store == clone / "var" / "models"
        assert found.work_dir == clone / "var" / "work"


def test_this_checkout_is_found_from_the_core_package_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No anchor, or one outside any checkout: the core package's own place decides.
    monkeypatch.chdir(tmp_path)
    assert default_paths().home == REPO_ROOT
    assert default_paths(tmp_path / "x.py").home == REPO_ROOT


def test_outside_a_checkout_the_working_directory_is_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An installed wheel: neither the caller's file nor this module is in a checkout.
    monkeypatch.setattr(paths, "__file__", str(tmp_path / "site-packages/trainyard/paths.py"))
    monkeypatch.chdir(tmp_path)
    found = default_paths(tmp_path / "site-packages/trainyard_api/config.py")
    assert (found.home, found.source) == (tmp_path.resolve(), "working directory")
    assert found.data_root == tmp_path.resolve() / "data"


def test_trainyard_home_wins_and_a_relative_one_is_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _fake_checkout(tmp_path / "clone")
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    found = default_paths(module, checkout=tmp_path / "clone")
    assert (found.home, found.source) == (tmp_path / "home", "TRAINYARD_HOME")
    assert found.data_root == tmp_path / "home" / "data"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(HOME_ENV, "rel")
    assert default_paths(module).home == Path(os.getcwd()) / "rel"


def test_a_known_checkout_is_used_as_given(tmp_path: Path) -> None:
    found = default_paths(checkout=tmp_path / "anywhere")
    assert (found.home, found.source) == (tmp_path / "anywhere", "checkout")


def test_samples_are_written_into_a_missing_default_root_and_said_so(tmp_path: Path) -> None:
    root = tmp_path / "home" / "data"
    wrote = write_samples_into_missing_default(root)
    assert wrote is not None and wrote.ok
    assert str(root) in wrote.message and "wrote the sample data" in wrote.message
    assert TABULAR_FILE in wrote.message and (root / TABULAR_FILE).is_file()


def test_an_existing_root_is_left_alone(tmp_path: Path) -> None:
    # Existing, even empty: the user's data, not ours to fill.
    assert write_samples_into_missing_default(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_a_root_that_cannot_be_written_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    wrote = write_samples_into_missing_default(blocker / "data")  # under a file: ENOTDIR
    assert wrote is not None and not wrote.ok
    assert "writing the sample data there failed" in wrote.message
