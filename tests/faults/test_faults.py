"""The CI-sized fault-injection run: every fault kind on a scikit-learn system (two
workers, a mixed stream of jobs over HTTP), two or three kinds per run, then a run of
faults drawn at random, then kill -9 of a supervisor holding an inference batch (a burst
of inference jobs for one model), then kill -9 of a training child and of a
supervisor on a PyTorch 2.1 and on a TensorFlow worker. Every run must end with zero
violations of the invariants (``invariants.py``); the table is printed at the end.

Needs TRAINYARD_BACKEND_PYTHON and TRAINYARD_WORKER_PYTHON (scripts/test.sh exports them),
and TRAINYARD_RUNTIME_PYTHONS for the deep-learning runs. Outside CI a missing one skips,
saying so; in CI (CI=true) it fails (``fault_suite.missing``).

No ``conftest.py`` here on purpose: the e2e suite's tests import their ``conftest`` by that
name, and a second one in the same pytest session would take its place. The fixtures live
in this module.

The long run is ``run_faults.py`` (see its docstring)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_suite import RESULTS, missing
from harness import Pythons, System
from injectors import BATCH_FAULTS, FAULT_KINDS
from invariants import read_ledger
from run_faults import render_table
from scenario import TERMINAL, RunResult, RunSpec, Session
from workload import TABULAR, Client, JobPlan

from trainyard.sample_data import ensure_samples
from trainyard.testing import wait_for

SEED = 20260501

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def pythons() -> Pythons:
    found = Pythons.from_env()
    if found is None:
        missing("TRAINYARD_BACKEND_PYTHON / TRAINYARD_WORKER_PYTHON are not set")
    assert found is not None
    return found


class _Summary:
    """A plugin registered by this module: the results table in pytest's terminal summary
    (a fixture's own output is captured; a hook's is not)."""

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if RESULTS:
            terminalreporter.section("fault-injection results")
            terminalreporter.write_line(render_table(RESULTS))


@pytest.fixture(scope="module")
def fault_root(request: pytest.FixtureRequest) -> Iterator[Path]:
    """Every system's folder (logs, ledger, AOF), kept when a run found a violation."""
    if not request.config.pluginmanager.has_plugin("trainyard-faults-summary"):
        request.config.pluginmanager.register(_Summary(), "trainyard-faults-summary")
    root = Path(tempfile.mkdtemp(prefix="trainyard-faults-"))
    yield root
    if all(not r.violations for r in RESULTS):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def data_root(fault_root: Path) -> Path:
    ensure_samples(fault_root / "data")
    return fault_root / "data"


def _record(result: RunResult) -> None:
    RESULTS.append(result)
    faults = [f.label + (f" (missed: {f.missed})" if f.missed else "") for f in result.faults]
    counts = dict(result.findings.counts)
    print(f"\n{result.runtime} {result.spec.kind} seed={result.spec.seed}: {result.jobs} jobs, "
          f"faults {faults}, counts {counts}, {result.wall_s:.0f}s")  # fmt: skip


def _assert_clean(result: RunResult, session: Session) -> None:
    _record(result)
    if result.violations:
        tails = "\n".join(session.system.tails())
        pytest.fail(
            f"{len(result.violations)} violations (seed {result.spec.seed}):\n"
            + "\n".join(result.violations)
            + f"\n\nlogs and ledger under {session.system.root}\n{tails}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def sklearn_session(pythons: Pythons, data_root: Path, fault_root: Path) -> Iterator[Session]:
    with Session(fault_root / "sklearn", pythons, data_root, "sklearn", workers=2) as session:
        session.start()
        yield session


# Two or three kinds per run (every kind once, the server restarted both ways), then
# three drawn at random, then a supervisor killed mid-batch: the CI budget on two cores
# is a few minutes. A fault that needs a running job comes first in its run, the
# restarts (which need none) after it: with the fork server a run's five jobs are done
# within seconds, and a SIGSTOP after a SIGTERM (whose worker is replaced first) found no
# training child left to stop.
SKLEARN_RUNS = [
    "kill9_supervisor+kill9_child",
    "sigstop_supervisor+restart_backend",
    "sigterm_worker+restart_redis+restart_redis",
    "mixed",
    "kill9_batch",
]
assert {k for run in SKLEARN_RUNS for k in run.split("+")} >= set(FAULT_KINDS)


@pytest.mark.parametrize("kind", SKLEARN_RUNS)
def test_sklearn_faults(sklearn_session: Session, kind: str) -> None:
    batch = kind in BATCH_FAULTS  # a burst of inference jobs in waves, one kill
    spec = RunSpec(kind, SEED + SKLEARN_RUNS.index(kind), jobs=12 if batch else 5,
                   faults=1 if batch else 3)  # fmt: skip
    result = sklearn_session.run(spec)
    _assert_clean(result, sklearn_session)
    missed = [f.missed for f in result.faults if f.missed]
    # A fault that found nothing to hit proves nothing: the stream is sized so it does.
    assert len(missed) < len(result.faults), f"every fault missed: {missed}"


def test_sklearn_session_ends_consistent(sklearn_session: Session) -> None:
    """After all the runs' faults: every earlier job still ends as it first ended."""
    problems = sklearn_session.final_check()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("runtime", ["pytorch-2.1", "tensorflow"])
def test_deep_learning_kills(
    pythons: Pythons, data_root: Path, fault_root: Path, runtime: str
) -> None:
    if runtime not in pythons.runtimes:
        missing(f"TRAINYARD_RUNTIME_PYTHONS names no python for {runtime}")
    root = fault_root / runtime.replace(".", "_")
    with Session(root, pythons, data_root, runtime, workers=1) as session:
        session.start()
        result = session.run(RunSpec("dl", SEED, jobs=1, faults=2))
        _assert_clean(result, session)
        assert not [f for f in result.faults if f.missed], "a kill found no running job"
        problems = session.final_check()
        assert not problems, "\n".join(problems)


def test_a_short_server_outage_as_training_ends_costs_no_attempt(
    pythons: Pythons, data_root: Path, fault_root: Path
) -> None:
    """The supervisor rides out Redis outages shorter than the lease (``_call``); that must
    include the moment a training child has just ended and its model is registered."""
    system = System(fault_root / "outage", pythons, data_root,
                    worker_env={"LEASE_S": "10", "RENEW_EVERY_S": "1"})  # fmt: skip
    with system:
        system.start({"sklearn": 1})
        client = Client(system.base_url)
        plan = JobPlan("outage-1", "train", "/jobs/training", {
            "model_type": "random_forest", "data_path": TABULAR, "framework_override": "sklearn",
            "hyperparameters": {"n_estimators": 200}, "max_attempts": 1})  # fmt: skip
        client.submit(plan)
        client.close()
        # The child's run is complete (the ledger's train line): take the server away until
        # the child has exited and a moment more, well inside the 10 s lease.
        wait_for(lambda: any(r["op"] == "train" for r in read_ledger(system.ledger)), 90,
                 "the training run to complete", interval_s=0.005)  # fmt: skip
        system.server.stop(kill=True)
        wait_for(lambda: not system.child_pids(), 30, "the child to exit")
        time.sleep(1.0)  # the outage: the supervisor registers the model meanwhile
        system.server.start()
        queue = system.queue()

        def ended() -> dict[str, str] | None:
            job = queue.get_job(str(plan.job_id))
            return job if job and job["state"] in TERMINAL else None

        job = wait_for(ended, 60, "the job to end")
        assert job is not None  # wait_for returns a truthy value
        assert job["state"] == "succeeded", (job["state"], job.get("error"))
        assert job["attempt"] == "1"
