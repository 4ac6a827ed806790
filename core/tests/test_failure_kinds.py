"""The failure kinds: which are retried (an explicit set, checked here kind by kind), and
that the statistics count every kind by its name, ``data_unavailable`` included (a kind
missing from the scripts' closed set would be counted as ``other``)."""

from __future__ import annotations

import pytest
from queue_checks import enqueue_simple

from trainyard.engine import JobQueue
from trainyard.stats import read_stats, stats_lua_table
from trainyard.types import FailureKind

pytestmark = pytest.mark.usefixtures("index_invariant")

# The worker's faults are retried; the job's own (and a user's decision) are not.
RETRIED = {"crashed", "killed", "lost", "infrastructure", "data_unavailable"}
NOT_RETRIED = {"user_error", "timeout", "expired", "cancelled"}


def test_every_kind_is_decided_retried_or_not() -> None:
    assert {k.value for k in FailureKind} == RETRIED | NOT_RETRIED
    assert {k.value for k in FailureKind if k.retryable} == RETRIED


@pytest.mark.parametrize("kind", list(FailureKind))
def test_the_scripts_count_every_kind_by_name(kind: FailureKind) -> None:
    assert f"{kind.value} = true" in stats_lua_table()


def test_data_unavailable_is_retried_then_dead_and_counted_by_name(queue: JobQueue) -> None:
    job_id = enqueue_simple(queue, max_attempts=2)
    why = "data_path '/data/x.csv' is not visible on worker w1 (DATA_ROOT=/srv/empty)"
    for expected in ("retrying", "dead"):
        claim = queue.claim("w1", ["sklearn"], 30_000)
        assert claim is not None and claim.job_id == job_id
        done = queue.finish(job_id, claim.attempt_id, "retry", error=why,
                            error_kind="data_unavailable", retry_delay_ms=0)  # fmt: skip
        assert done.state == expected
    job = queue.get_job(job_id)
    assert job is not None
    assert (job["error_kind"], job["error"]) == ("data_unavailable", why)
    stats = read_stats(queue.redis, queue.keys)
    assert stats.retries.get(runtime="sklearn", job_type="training") == 1
    assert stats.finished.get(outcome="dead", error_kind="data_unavailable") == 1
    assert stats.finished.get(error_kind="other") == 0
