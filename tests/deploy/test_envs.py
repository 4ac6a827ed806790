"""scripts/lib/envs.sh: one environment per clone and per hash of its pins, built with the
real uv from its cache (the small core project stands in for the multi-GB runtimes)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from deploy_helpers import REPO


def make_clone(root: Path) -> Path:
    """What sync_env needs of a clone: the script and the core project."""
    (root / "scripts/lib").mkdir(parents=True)
    shutil.copy(REPO / "scripts/lib/envs.sh", root / "scripts/lib/envs.sh")
    shutil.copytree(REPO / "core", root / "core", ignore=shutil.ignore_patterns("tests", ".venv"))
    return root


def sync_core(clone: Path, env_root: Path) -> Path:
    result = subprocess.run(
        ["bash", "-c", "source scripts/lib/envs.sh && ensure_uv && sync_env core"],
        cwd=clone, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TRAINYARD_ENV_ROOT": str(env_root)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def imported_from(env: Path) -> str:
    return subprocess.run(
        [str(env / "bin/python"), "-c", "import trainyard; print(trainyard.__file__)"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip


def test_two_clones_never_share_an_environment(tmp_path: Path) -> None:
    env_root = tmp_path / "envs"
    a, b = make_clone(tmp_path / "a"), make_clone(tmp_path / "b")
    env_a, env_b = sync_core(a, env_root), sync_core(b, env_root)
    assert env_a != env_b
    assert env_a.parent == env_b.parent == env_root
    # Each runs its own clone's code (editable installs), whichever synced last.
    assert imported_from(env_a).startswith(str(a / "core/src"))
    assert imported_from(env_b).startswith(str(b / "core/src"))
    assert (env_a / ".trainyard-clone").read_text().strip() == str(a)
    # Synced again, a clone reuses its environment.
    assert sync_core(a, env_root) == env_a
    # A deleted clone's environment goes at the next sync of another; a live one stays.
    shutil.rmtree(a)
    assert sync_core(b, env_root) == env_b
    assert not env_a.exists()
    assert env_b.exists()


def test_new_pins_replace_only_this_clones_older_environment(tmp_path: Path) -> None:
    env_root = tmp_path / "envs"
    a, b = make_clone(tmp_path / "a"), make_clone(tmp_path / "b")
    old_a, env_b = sync_core(a, env_root), sync_core(b, env_root)
    # The core's pyproject is part of the hash: any edit there is "new pins".
    with (a / "core/pyproject.toml").open("a") as f:
        f.write("\n# changed\n")
    new_a = sync_core(a, env_root)
    assert new_a != old_a
    assert not old_a.exists()
    assert env_b.exists()
    # A folder of the shared layout before per-clone environments is left alone.
    legacy = env_root / "core-none-0123456789abcdef"
    legacy.mkdir()
    sync_core(b, env_root)
    assert legacy.exists()
