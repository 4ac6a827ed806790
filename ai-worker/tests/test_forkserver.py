"""The fork server (``trainyard_worker.forkserver``) and its launcher, with real processes:
a job forked from the warm server must be the process a fresh ``python -m
trainyard_worker.child SPEC`` would have been (own process group, the given environment,
its title, its pipes, its exit and its death by signal as Popen reports them), die with
the supervisor, and the launcher must fall back to a fresh process when the server is gone.
Most tests run ``forkserver_probe`` as the child module (it reports what it found); one
trains a real scikit-learn job through the queue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from forkserver_probe import probe_env, read_report, training_spec, write_spec

from conftest import pid_alive
from trainyard.embedded import EmbeddedServer
from trainyard.engine import JobQueue
from trainyard.sample_data import write_tabular
from trainyard.testing import wait_for
from trainyard.types import JobType
from trainyard_worker.forkserver import FORK_SAFE
from trainyard_worker.launcher import ForkedChild, TrainingLauncher
from trainyard_worker.processes import describe_exit, kill_group

PROBE = "forkserver_probe"
# Imported by the server before any job: a forked child finds them loaded at its entry.
WARM = ["sklearn", "trainyard_worker.runtimes.sklearn_runtime", "trainyard.engine", "redis"]


def _started(framework: str = "sklearn", **env: str) -> TrainingLauncher:
    launcher = TrainingLauncher(framework, probe_env(**env), os.getpid(), True, child_module=PROBE)
    launcher.start()
    assert launcher.wait_ready(120), "the fork server did not get ready"
    return launcher


@pytest.fixture(scope="module")
def shared() -> Iterator[TrainingLauncher]:
    """One warm server for the tests that leave it running."""
    launcher = _started(MARK="one")
    yield launcher
    launcher.close()


@pytest.fixture
def launcher(shared: TrainingLauncher) -> TrainingLauncher:
    assert shared.server_pid is not None, "an earlier test broke the shared server"
    return shared


@pytest.fixture
def own() -> Iterator[TrainingLauncher]:
    """A server of its own, for a test that kills or replaces it."""
    launcher = _started(MARK="one")
    yield launcher
    launcher.close()


def _lines(stream: IO[str] | None) -> list[str]:
    assert stream is not None
    return [line.rstrip("\n") for line in stream]


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_a_forked_job_is_the_process_a_fresh_one_would_be(
    launcher: TrainingLauncher, tmp_path: Path
) -> None:
    spec, report_path = write_spec(
        tmp_path, "job-1", watch_modules=WARM, env_keys=["MARK", "PYTEST_CURRENT_TEST"],
        stdout=["first line", "second line"], stderr=["a warning"], exit=5,
        supervisor_pid=os.getpid(),
    )  # fmt: skip
    child = launcher.spawn(spec, probe_env(MARK="one"))
    assert isinstance(child, ForkedChild)
    assert _lines(child.stdout) == ["first line", "second line"]
    assert _lines(child.stderr) == ["a warning"]
    assert child.wait(timeout=30) == 5 and child.poll() == 5 and child.returncode == 5
    report = read_report(report_path)
    # Forked from the warm server, so the framework was already imported at its entry.
    assert report["ppid"] == launcher.server_pid
    assert report["loaded_at_entry"] == WARM
    # Its own session and process group, as start_new_session gives a fresh child.
    assert report["pid"] == child.pid == report["pgid"] == report["sid"]
    assert report["env"] == {"MARK": "one", "PYTEST_CURRENT_TEST": None}
    assert report["cmdline"].rstrip("\0 ") == f"python -m {PROBE} {spec}"
    # ps -o comm, pgrep -x: the interpreter's name as for a fresh child (and the server).
    assert report["comm"] == _comm(launcher.server_pid or 0) == Path(sys.executable).name[:15]
    assert report["argv"][1:] == [str(spec)]
    assert report["fds"] == [0, 1, 2] and report["stdin"] == "/dev/null"
    assert report["pdeathsig"] == signal.SIGKILL
    # die_with_parent(supervisor) holds in a forked child (its parent is the server).
    assert report["survived_die_with_parent"] is True


def test_a_fresh_process_when_the_fork_server_is_off(tmp_path: Path) -> None:
    off = TrainingLauncher("sklearn", probe_env(), os.getpid(), False, child_module=PROBE)
    spec, report_path = write_spec(tmp_path, "job-1", watch_modules=WARM, exit=4,
                                   supervisor_pid=os.getpid())  # fmt: skip
    child = off.spawn(spec, probe_env())
    assert isinstance(child, subprocess.Popen)
    assert child.wait(timeout=60) == 4
    report = read_report(report_path)
    assert report["ppid"] == os.getpid() and off.server_pid is None
    assert report["loaded_at_entry"] == []  # nothing imported ahead in a fresh interpreter
    assert report["pid"] == report["pgid"]
    off.close()


def test_a_framework_that_is_not_fork_safe_starts_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(FORK_SAFE, "sklearn", False)
    unsafe = TrainingLauncher("sklearn", probe_env(), os.getpid(), True, child_module=PROBE)
    unsafe.start()
    assert not unsafe.forking and unsafe.server_pid is None
    spec, _ = write_spec(tmp_path, "job-1")
    child = unsafe.spawn(spec, probe_env())
    assert isinstance(child, subprocess.Popen) and child.wait(timeout=60) == 0
    unsafe.close()


def test_each_forked_job_draws_fresh_random_numbers(
    launcher: TrainingLauncher, tmp_path: Path
) -> None:
    draws = []
    for n in range(2):
        spec, report_path = write_spec(tmp_path, f"job-{n}", numpy=True)
        child = launcher.spawn(spec, probe_env(MARK="one"))
        assert isinstance(child, ForkedChild) and child.wait(timeout=30) == 0
        draws.append(read_report(report_path)["numpy_draw"])
    assert draws[0] != draws[1]  # without a reseed both children share the server's state


def test_an_uncaught_exception_exits_1_with_its_traceback(
    launcher: TrainingLauncher, tmp_path: Path
) -> None:
    spec, _ = write_spec(tmp_path, "job-1", **{"raise": "boom in the job"})
    child = launcher.spawn(spec, probe_env(MARK="one"))
    stderr = _lines(child.stderr)
    assert child.wait(timeout=30) == 1
    assert stderr[0] == "Traceback (most recent call last):"
    assert stderr[-1] == "RuntimeError: boom in the job"


def test_kill_group_ends_the_job_and_its_group_like_popen(
    launcher: TrainingLauncher, tmp_path: Path
) -> None:
    spec, report_path = write_spec(tmp_path, "job-1", hold=True, grandchild=True)
    child = launcher.spawn(spec, probe_env(MARK="one"))
    grandchild = wait_for(lambda: report_path.exists() and read_report(report_path)["grandchild"],
                          30, "the probe to start its grandchild")  # fmt: skip
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.2)
    assert child.poll() is None
    kill_group(child, grace_s=5.0)
    assert child.returncode == -signal.SIGTERM
    assert describe_exit(child.returncode) == ("crashed", "the job's process was killed by SIGTERM")
    wait_for(lambda: not pid_alive(grandchild), 10, "the job's grandchild to die with its group")


def test_a_kill_right_after_spawn_cannot_miss_the_group(
    launcher: TrainingLauncher, tmp_path: Path
) -> None:
    spec, _ = write_spec(tmp_path, "job-1", hold=True)
    child = launcher.spawn(spec, probe_env(MARK="one"))
    os.killpg(child.pid, signal.SIGKILL)  # the group exists as soon as spawn returns
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert describe_exit(-signal.SIGKILL)[0] == "killed"


def test_the_job_dies_with_its_server(own: TrainingLauncher, tmp_path: Path) -> None:
    spec, report_path = write_spec(tmp_path, "job-1", hold=True)
    child = own.spawn(spec, probe_env(MARK="one"))
    wait_for(report_path.exists, 30, "the probe to start")
    os.kill(own.server_pid or 0, signal.SIGKILL)
    # PR_SET_PDEATHSIG: the kernel kills the job; its status went with the server.
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert not pid_alive(child.pid)


def test_a_dead_server_means_a_fresh_job_and_a_new_server(
    own: TrainingLauncher, tmp_path: Path
) -> None:
    old = own.server_pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: own.server_pid is None, 10, "the launcher to see its server die")
    spec, report_path = write_spec(tmp_path, "job-1", watch_modules=WARM)
    fresh = own.spawn(spec, probe_env(MARK="one"))
    assert isinstance(fresh, subprocess.Popen) and fresh.wait(timeout=60) == 0
    assert read_report(report_path)["ppid"] == os.getpid()
    assert read_report(report_path)["loaded_at_entry"] == []
    # Restarted for the next job, which is forked from the new server.
    assert own.wait_ready(120) and own.server_pid not in (None, old)
    spec, report_path = write_spec(tmp_path, "job-2", watch_modules=WARM)
    forked = own.spawn(spec, probe_env(MARK="one"))
    assert isinstance(forked, ForkedChild) and forked.wait(timeout=30) == 0
    assert read_report(report_path)["ppid"] == own.server_pid


def test_a_new_environment_starts_fresh_then_forks_with_it(
    own: TrainingLauncher, tmp_path: Path
) -> None:
    old = own.server_pid
    spec, report_path = write_spec(tmp_path, "job-1", env_keys=["MARK"])
    fresh = own.spawn(spec, probe_env(MARK="two"))
    assert isinstance(fresh, subprocess.Popen) and fresh.wait(timeout=60) == 0
    assert read_report(report_path)["env"] == {"MARK": "two"}
    assert own.wait_ready(120) and own.server_pid not in (None, old)
    spec, report_path = write_spec(tmp_path, "job-2", env_keys=["MARK"])
    forked = own.spawn(spec, probe_env(MARK="two"))
    assert isinstance(forked, ForkedChild) and forked.wait(timeout=30) == 0
    assert read_report(report_path)["env"] == {"MARK": "two"}


def test_close_ends_the_server_and_a_job_still_running(
    own: TrainingLauncher, tmp_path: Path
) -> None:
    server = own.server_pid
    assert server is not None
    spec, report_path = write_spec(tmp_path, "job-1", hold=True)
    child = own.spawn(spec, probe_env(MARK="one"))
    wait_for(report_path.exists, 30, "the probe to start")
    own.close()
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert not pid_alive(server) and own.server_pid is None
    assert isinstance(own.spawn(spec, probe_env(MARK="one")), subprocess.Popen)


def test_a_server_that_keeps_dying_before_it_is_ready_is_given_up(tmp_path: Path) -> None:
    # Its supervisor pid is not its parent's: it exits at once, every time.
    doomed = TrainingLauncher("sklearn", probe_env(), 1, True, child_module=PROBE, max_failures=2)
    doomed.start()
    for n in range(2):
        assert doomed.forking
        spec, _ = write_spec(tmp_path, f"job-{n}")
        fresh = doomed.spawn(spec, probe_env())
        assert isinstance(fresh, subprocess.Popen) and fresh.wait(timeout=60) == 0
    assert not doomed.forking and doomed.server_pid is None
    doomed.close()


_OWNER = """
import json, os, sys, time
from pathlib import Path
from forkserver_probe import probe_env
from trainyard_worker.launcher import TrainingLauncher

launcher = TrainingLauncher(
    "sklearn", probe_env(), os.getpid(), True, child_module="forkserver_probe"
)
launcher.start()
spec = Path(sys.argv[1])
spec.write_text(json.dumps({"report": sys.argv[2], "hold": True}))
child = launcher.spawn(spec, probe_env())
print(json.dumps({"server": launcher.server_pid, "child": child.pid, "type": type(child).__name__}),
      flush=True)
time.sleep(300)
"""


def test_a_kill_9_of_the_supervisor_takes_the_server_and_its_job(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(tmp_path / "spec.json"), str(report_path)],
        env=probe_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert owner.stdout is not None
        pids = json.loads(owner.stdout.readline())
        assert pids["type"] == "ForkedChild"
        wait_for(report_path.exists, 30, "the job to start")
        assert read_report(report_path)["ppid"] == pids["server"]
    finally:
        owner.kill()
        owner.wait()
    wait_for(lambda: not pid_alive(pids["server"]) and not pid_alive(pids["child"]), 10,
             "the server and the job to die with their supervisor")  # fmt: skip


def test_a_real_training_job_forked_from_the_server(
    server: EmbeddedServer, queue: JobQueue, tmp_path: Path
) -> None:
    write_tabular(tmp_path / "data" / "tabular.csv")
    request = {"model_type": "random_forest", "data_path": "/data/tabular.csv",
               "hyperparameters": {"n_estimators": 10, "random_state": 1}}  # fmt: skip
    queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request=request)
    claim = queue.claim("w1", ["sklearn"], 60_000)
    assert claim is not None
    spec = training_spec(tmp_path / "work", server.url, queue.keys.namespace,
                         (claim.job_id, claim.attempt_id), "sklearn", "tabular",
                         tmp_path / "data", request)  # fmt: skip
    real = TrainingLauncher("sklearn", probe_env(), os.getpid(), True)  # the real child module
    real.start()
    try:
        child = real.spawn(spec, probe_env())
        assert isinstance(child, ForkedChild)
        stderr = _lines(child.stderr)
        assert child.wait(timeout=60) == 0, stderr
    finally:
        real.close()
    result = json.loads((tmp_path / "work" / "result.json").read_text())
    assert result["ok"] is True and result["metrics"]["accuracy"] > 0.5
    assert (tmp_path / "work" / "out" / "model.skops").is_file()
    # Progress went to Redis through the fenced script (the attempt's connection works).
    assert "progress" in [event.kind for event in queue.events(claim.job_id)]
