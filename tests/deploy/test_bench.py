"""The benchmarks' own environment stays apart from the product's, and the peer benchmarks
keep importing against the engine's API.

bench/pyproject.toml + bench/uv.lock pin the peers (Dramatiq, taskiq, taskiq-redis) and the
client exactly, with the core by path; bench/run.sh builds that environment outside the
clone; run_local.sh and test.sh never do. Timings are not checked here (the benchmarks
print them); the scripts are only imported and asked for their usage, which needs none of
the peers (they are imported inside the functions that use them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest
from deploy_helpers import REPO

BENCH = REPO / "bench"


def _pins(deps: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for dep in deps:
        name, sep, version = dep.partition("==")
        if sep:
            pins[name.split("[")[0].strip().lower()] = version.strip()
    return pins


def test_bench_environment_pins_peers_and_client_exactly() -> None:
    bench = tomllib.loads((BENCH / "pyproject.toml").read_text())
    core = tomllib.loads((REPO / "core/pyproject.toml").read_text())
    deps = bench["project"]["dependencies"]
    pins = _pins(deps)
    for name in ("dramatiq", "taskiq", "taskiq-redis", "redis", "hiredis"):
        assert name in pins, f"{name} is not pinned exactly in bench/pyproject.toml"
    assert any(d.startswith("dramatiq[redis]==") for d in deps), "Dramatiq needs its redis extra"
    core_pins = _pins(core["project"]["dependencies"])
    # One client for every system measured, and the core's own.
    assert pins["redis"] == core_pins["redis"]
    assert pins["hiredis"] == core_pins["hiredis"]
    assert bench["tool"]["uv"]["sources"]["trainyard"]["path"] == "../core"


def test_bench_lock_holds_the_pinned_versions() -> None:
    bench = tomllib.loads((BENCH / "pyproject.toml").read_text())
    lock = tomllib.loads((BENCH / "uv.lock").read_text())
    locked = {p["name"]: p.get("version") for p in lock["package"]}
    for name, version in _pins(bench["project"]["dependencies"]).items():
        assert locked.get(name) == version, f"bench/uv.lock has {name} {locked.get(name)}"


def test_run_script_builds_the_bench_environment_outside_the_clone() -> None:
    run = BENCH / "run.sh"
    assert os.access(run, os.X_OK)
    text = run.read_text()
    assert "set -euo pipefail" in text
    assert "sync_env bench" in text  # scripts/lib/envs.sh: outside the clone, keyed by lock
    parsed = subprocess.run(["bash", "-n", str(run)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr


@pytest.mark.parametrize("script", ["run_local.sh", "test.sh", "setup_dev.sh"])
def test_the_readme_commands_never_build_the_bench_environment(script: str) -> None:
    text = (REPO / "scripts" / script).read_text()
    assert "sync_env bench" not in text
    assert "bench/pyproject" not in text


@pytest.mark.parametrize("script", ["bench_peers.py", "bench_fleet.py"])
def test_bench_scripts_import_against_the_engine(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=BENCH,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_bench_modules_import() -> None:
    """The modules the scripts load lazily (in the consumer processes) import too."""
    code = "import _trainyard_system, _trainyard_breakdown, _fleet_sim, _peer_systems"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=BENCH
    )
    assert result.returncode == 0, result.stderr


def test_the_engine_still_has_every_call_the_benchmarks_make() -> None:
    """The simulated workers make the real worker's calls; a renamed one fails here
    rather than in the next benchmark run."""
    import trainyard.engine as engine

    calls = ("claim_work", "set_worker_state", "enqueue_many", "finish", "heartbeat", "reap",
             "wait_for_work", "renew", "events", "get_job", "set_loaded_models")  # fmt: skip
    for name in calls:
        assert callable(getattr(engine.JobQueue, name, None)), name
    for name in ("Submission", "Claim", "FinishItem"):
        assert hasattr(engine, name), name
