"""Where user data may come from: paths inside one configured data root.

The seed writes paths like ``/data/tabular_data.csv``. Such a path means "inside the data
root" wherever the root really is (``./data`` locally, ``/data`` in containers). Relative
paths are taken from the root too. Anything that leaves the root is refused: ``..``
parts, other absolute paths, and symlinks that point outside.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

__all__ = ["SEED_DATA_PREFIX", "DataPathError", "resolve_data_path"]

SEED_DATA_PREFIX = "/data"


class DataPathError(ValueError):
    """The path is not allowed or not there; the message says which and why."""


def resolve_data_path(data_root: Path, data_path: str, must_exist: bool = True) -> Path:
    if "\x00" in data_path:
        raise DataPathError("data_path contains a NUL byte")
    if "\\" in data_path:
        raise DataPathError("data_path must use '/' separators")
    raw = PurePosixPath(data_path)
    if ".." in raw.parts:
        raise DataPathError("data_path must not contain '..'")
    if raw.is_absolute():
        if raw.parts[:2] != ("/", SEED_DATA_PREFIX.strip("/")):
            raise DataPathError(
                f"absolute data_path must start with {SEED_DATA_PREFIX}/ (the data root); "
                f"got {data_path!r}"
            )
        relative = PurePosixPath(*raw.parts[2:])
    else:
        relative = raw
    try:
        root = Path(os.path.realpath(data_root))
        candidate = Path(os.path.realpath(root / relative))
        if candidate != root and root not in candidate.parents:
            raise DataPathError("data_path resolves outside the data root (a symlink?)")
        if must_exist and not candidate.exists():
            raise DataPathError(f"data_path {data_path!r} does not exist in the data root")
        # A FIFO would block the reader forever, a device or socket is no data: only
        # regular files and folders are read.
        if must_exist and not (candidate.is_file() or candidate.is_dir()):
            raise DataPathError(f"data_path {data_path!r} is not a regular file or a folder")
    except OSError as exc:  # e.g. a name longer than the filesystem allows (ENAMETOOLONG)
        raise DataPathError(f"data_path cannot be used: {exc.strerror or exc}") from None
    return candidate
