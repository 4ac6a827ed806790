"""Data paths: the seed's /data/... paths map into the data root; nothing outside it is
reachable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainyard.datapaths import DataPathError, resolve_data_path


@pytest.fixture
def tabular(data_root: Path) -> Path:
    path = data_root / "tabular_data.csv"
    path.write_text("a,b,label\n1,2,x\n")
    (data_root / "images" / "cats").mkdir(parents=True)
    return path


def test_a_seed_style_absolute_path_maps_into_the_root(data_root: Path, tabular: Path) -> None:
    assert resolve_data_path(data_root, "/data/tabular_data.csv") == tabular.resolve()


def test_a_relative_path_is_taken_from_the_root(data_root: Path, tabular: Path) -> None:
    assert resolve_data_path(data_root, "tabular_data.csv") == tabular.resolve()
    assert resolve_data_path(data_root, "images/cats") == (data_root / "images" / "cats").resolve()
    assert resolve_data_path(data_root, "/data/images/") == (data_root / "images").resolve()


def test_the_root_itself_is_allowed(data_root: Path) -> None:
    assert resolve_data_path(data_root, "/data") == data_root.resolve()


def test_a_symlink_that_stays_inside_the_root_is_allowed(data_root: Path, tabular: Path) -> None:
    (data_root / "latest.csv").symlink_to(tabular)
    assert resolve_data_path(data_root, "/data/latest.csv") == tabular.resolve()


@pytest.mark.parametrize(
    "path",
    [
        "/data/../etc/passwd",
        "../outside.csv",
        "images/../../outside.csv",
        "/etc/passwd",
        "/database/x.csv",
        "/dataset/tabular_data.csv",
        "/tmp/tabular_data.csv",
        "tabular\x00.csv",
        "/data/tabular_data.csv\x00.png",
        "images\\cats",
        "C:\\data\\x.csv",
    ],
)
def test_paths_that_leave_the_root_or_are_malformed_are_refused(
    data_root: Path, tabular: Path, path: str
) -> None:
    with pytest.raises(DataPathError):
        resolve_data_path(data_root, path, must_exist=False)


def test_a_symlink_pointing_outside_the_root_is_refused(data_root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("password\n")
    (data_root / "innocent.csv").symlink_to(secret)
    (data_root / "escape").symlink_to(tmp_path)
    for path in ("/data/innocent.csv", "innocent.csv", "escape/secret.csv"):
        with pytest.raises(DataPathError, match="outside"):
            resolve_data_path(data_root, path)


def test_a_missing_file_is_refused_unless_existence_is_not_required(data_root: Path) -> None:
    with pytest.raises(DataPathError, match="does not exist"):
        resolve_data_path(data_root, "/data/nope.csv")
    assert resolve_data_path(data_root, "/data/nope.csv", must_exist=False) == (
        data_root.resolve() / "nope.csv"
    )


def test_a_data_root_that_is_itself_a_symlink_works(
    tmp_path: Path, tabular: Path, data_root: Path
) -> None:
    link = tmp_path / "root-link"
    os.symlink(data_root, link)
    assert resolve_data_path(link, "/data/tabular_data.csv") == tabular.resolve()
