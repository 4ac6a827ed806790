"""Where the default data root, model store and scratch folder are, for every part alike.

The backend, the worker and ``trainyard up`` resolve their defaults here, so they agree
wherever they are started from (``backend/``, ``ai-worker/``, the repository root):

1. ``$TRAINYARD_HOME`` when it is set (a relative value is taken from the working
   directory), e.g. a test that must not write into the checkout;
2. else the checkout the running code belongs to: the nearest folder above the calling
   package's own file (or, failing that, above this file) that holds ``core/``,
   ``backend/`` and ``ai-worker/``;
3. else the working directory: an installed wheel or a container image (the images set
   ``DATA_ROOT``, ``MODEL_STORE`` and ``WORK_DIR`` explicitly anyway).

Under that folder ("home"): ``data/`` is the data root, ``var/models`` the model store
and ``var/work`` the scratch folder. Explicit settings (``DATA_ROOT=...``) always win and
are not resolved here; a relative explicit value is taken from the working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

__all__ = [
    "HOME_ENV",
    "DefaultPaths",
    "HomeSource",
    "SampleWrite",
    "default_paths",
    "find_checkout",
    "write_samples_into_missing_default",
]

HOME_ENV = "TRAINYARD_HOME"

HomeSource = Literal["TRAINYARD_HOME", "checkout", "working directory"]

# A folder is a checkout when it holds the three parts, each recognisable by a file that
# an installed copy or a container image does not have in that arrangement.
_CHECKOUT_MARKERS = ("core/pyproject.toml", "backend/pyproject.toml", "ai-worker/pyproject.toml")


def _is_checkout(folder: Path) -> bool:
    try:
        return all((folder / marker).is_file() for marker in _CHECKOUT_MARKERS)
    except OSError:  # a folder above us we may not look into
        return False


def find_checkout(start: str | Path) -> Path | None:
    """The nearest folder at or above ``start`` (a file or folder; symlinks followed) that
    is a Trainyard checkout, or None."""
    try:
        here = Path(start).resolve()
    except OSError:
        return None
    for folder in (here, *here.parents):
        if _is_checkout(folder):
            return folder
    return None


@dataclass(frozen=True)
class DefaultPaths:
    """The default folders under one home folder, and why that folder was chosen. The
    model store and the scratch folder sit in ``var_dir`` (``trainyard up --var-dir``
    moves them together: ``dataclasses.replace(paths, var_dir=...)``)."""

    home: Path
    source: HomeSource
    data_root: Path
    var_dir: Path

    @classmethod
    def under(cls, home: Path, source: HomeSource) -> DefaultPaths:
        return cls(home, source, home / "data", home / "var")

    @property
    def model_store(self) -> Path:
        return self.var_dir / "models"

    @property
    def work_dir(self) -> Path:
        return self.var_dir / "work"


def default_paths(anchor: str | Path | None = None, checkout: Path | None = None) -> DefaultPaths:
    """Where the defaults are (see the module docstring). ``anchor``: a file of the calling
    package (its ``__file__``); ``checkout``: a checkout root the caller already knows
    (``trainyard up --repo-root``), used instead of searching. Read at each call, so a
    changed ``TRAINYARD_HOME`` counts."""
    override = os.environ.get(HOME_ENV, "").strip()
    if override:
        return DefaultPaths.under(Path(override).expanduser().absolute(), "TRAINYARD_HOME")
    if checkout is not None:
        return DefaultPaths.under(Path(checkout).absolute(), "checkout")
    for start in (anchor, __file__):
        if start is not None and (found := find_checkout(start)) is not None:
            return DefaultPaths.under(found, "checkout")
    return DefaultPaths.under(Path.cwd(), "working directory")


class SampleWrite(NamedTuple):
    """What :func:`write_samples_into_missing_default` did: the line to log, and whether
    the samples are now there (False: writing failed, the message says why)."""

    message: str
    ok: bool


def write_samples_into_missing_default(data_root: Path) -> SampleWrite | None:
    """At a service's start, for a data root that is the *default* one: when it does not
    exist, write the sample data there and say so; None when it exists (or cannot be
    looked at: the caller's own checks report that).

    Never call it for an explicitly set ``DATA_ROOT``: a missing explicit root is a
    mistake to report (a typo, an unmounted volume), not a place to fill."""
    from .sample_data import ensure_samples  # the writers are only needed on a first start

    try:
        if data_root.exists():
            return None
    except OSError:
        return None
    try:
        written = ensure_samples(data_root)
    except OSError as exc:
        return SampleWrite(
            f"DATA_ROOT is not set and its default {data_root} does not exist; writing the "
            f"sample data there failed: {exc.strerror or exc}. Set DATA_ROOT",
            ok=False,
        )
    return SampleWrite(
        f"DATA_ROOT is not set and its default {data_root} did not exist: wrote the sample "
        f"data there ({', '.join(p.name for p in written)}); set DATA_ROOT to use other data",
        ok=True,
    )
