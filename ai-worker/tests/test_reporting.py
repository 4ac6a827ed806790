"""Progress events with metrics: the throttle that bounds them (pure logic, driven by a
fake clock), the reporter the PyTorch and TensorFlow runtimes share, and the child's ETA
clock, which starts when training starts; then the events through the real queue."""

from __future__ import annotations

from typing import Any

import pytest
from runtime_support import Recorder

from trainyard.engine import JobQueue
from trainyard.types import JobType
from trainyard_worker.child import QueueTrainContext, _Timing
from trainyard_worker.runtimes.reporting import (
    EVERY_S,
    EVERY_STEPS,
    MAX_STEP_EVENTS,
    StepReporter,
    StepThrottle,
    fraction_done,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _run(reporter: StepReporter, clock: FakeClock, seconds_per_step: float) -> None:
    reporter.begin()
    for epoch in range(1, reporter.epochs + 1):
        for step in range(1, reporter.steps + 1):
            clock.now += seconds_per_step
            reporter.step(epoch, step, loss=1.0 / (epoch + step), samples=8, correct=4)


# ---------------------------------------------------------------- the throttle


def test_every_n_steps_when_steps_are_fast() -> None:
    clock = FakeClock()
    throttle = StepThrottle(1000, clock=clock)
    due = []
    for step in range(1, 101):
        clock.now += 0.01
        if throttle.due(step):
            due.append(step)
    assert due == list(range(EVERY_STEPS, 101, EVERY_STEPS))


def test_every_few_seconds_when_steps_are_slow() -> None:
    clock = FakeClock()
    throttle = StepThrottle(1000, clock=clock)
    due = []
    for step in range(1, 31):
        clock.now += 1.0  # a step a second: the time rule comes first
        if throttle.due(step):
            due.append(step)
    # every 3 s, and the multiples of 10 that come first
    assert EVERY_S == 3.0 and due == [3, 6, 9, 10, 13, 16, 19, 20, 23, 26, 29, 30]


def test_a_long_run_is_thinned_under_the_cap() -> None:
    clock = FakeClock()
    total = 1_000_000
    throttle = StepThrottle(total, clock=clock)
    assert throttle.min_gap == total // MAX_STEP_EVENTS
    count = 0
    for step in range(1, total + 1):
        clock.now += 5.0  # slow steps: the time rule would fire at every one
        count += throttle.due(step)
    assert count == MAX_STEP_EVENTS


def test_forced_steps_pass_but_never_twice() -> None:
    clock = FakeClock()
    throttle = StepThrottle(100, clock=clock)
    assert throttle.due(3, force=True)
    assert not throttle.due(3, force=True)  # the same step is not reported twice
    assert not throttle.due(4)


# ---------------------------------------------------------------- the reporter


def test_reporter_events_have_the_contract_fields() -> None:
    clock = FakeClock()
    ctx = Recorder()
    reporter = StepReporter(ctx, epochs=2, steps=25, learning_rate=lambda: 0.01, clock=clock)
    _run(reporter, clock, 0.1)
    reporter.validation(2, {"val_loss": 0.5, "val_accuracy": 0.75}, epoch_loss=0.2)
    start, *train, val = ctx.events
    assert start == {
        "epoch": 1, "epochs": 2, "step": 0, "steps": 25, "fraction": 0.0, "phase": "train",
        "loss": None, "metrics": None,
    }  # fmt: skip
    # every 10 global steps (10, 20, 30=epoch 2 step 5, ...) and every epoch's last step
    assert [(e["epoch"], e["step"]) for e in train] == [
        (1, 10), (1, 20), (1, 25), (2, 5), (2, 15), (2, 25),
    ]  # fmt: skip
    for event in train:
        assert event["phase"] == "train"
        metrics = event["metrics"]
        assert set(metrics) == {"loss", "train_accuracy", "learning_rate", "samples_per_s"}
        assert metrics["train_accuracy"] == 0.5 and metrics["learning_rate"] == 0.01
        assert event["loss"] == metrics["loss"]
        global_step = (event["epoch"] - 1) * 25 + event["step"]
        assert event["fraction"] == pytest.approx(global_step / 50)
    # the window mean of the losses since the previous event, and samples over its seconds
    assert train[0]["metrics"]["loss"] == pytest.approx(sum(1 / (1 + s) for s in range(1, 11)) / 10)
    assert train[0]["metrics"]["samples_per_s"] == pytest.approx(80 / 1.0)
    assert train[2]["metrics"]["samples_per_s"] == pytest.approx(40 / 0.5)
    assert val["phase"] == "val" and val["fraction"] == 1.0 and val["loss"] == 0.2
    assert val["metrics"] == {"val_loss": 0.5, "val_accuracy": 0.75}


def test_a_long_run_sends_a_bounded_number_of_events() -> None:
    clock = FakeClock()
    ctx = Recorder()
    epochs, steps = 50, 20_000  # a million steps
    reporter = StepReporter(ctx, epochs=epochs, steps=steps, clock=clock)
    reporter.begin()
    for epoch in range(1, epochs + 1):
        for step in range(1, steps + 1):
            clock.now += 0.5
            reporter.step(epoch, step, loss=0.1, samples=1)
        reporter.validation(epoch, {"val_accuracy": 0.5})
    assert len(ctx.events) == reporter.events
    assert len(ctx.events) <= MAX_STEP_EVENTS + 2 * epochs + 1
    assert all("train_accuracy" not in (e["metrics"] or {}) for e in ctx.events)  # not given


def test_validation_metrics_must_be_prefixed() -> None:
    reporter = StepReporter(Recorder(), epochs=1, steps=1)
    with pytest.raises(ValueError, match="val_"):
        reporter.validation(1, {"accuracy": 0.5})


def test_fraction_done() -> None:
    assert fraction_done(1, 4, 0, 10) == 0.0
    assert fraction_done(2, 4, 5, 10) == 0.375
    assert fraction_done(3, 4) == 0.75  # no step: the epoch counts as done
    assert fraction_done(None, 4) is None and fraction_done(1, 0) is None
    assert fraction_done(0, 1) == 0.0


# ---------------------------------------------------------------- the ETA clock


def test_eta_counts_from_the_start_of_training_not_the_import() -> None:
    clock = FakeClock()
    timing = _Timing(clock)
    clock.now += 10.0  # framework import and data loading: not training
    first = timing.fields({"epoch": 1, "epochs": 2, "step": 0, "steps": 10})
    assert first == {"elapsed_s": 10.0, "fraction": 0.0}  # no ETA from nothing done
    clock.now += 2.0  # 5 of 20 steps in 2 s: 6 s left
    assert timing.fields({"epoch": 1, "epochs": 2, "step": 5, "steps": 10}) == {
        "elapsed_s": 12.0, "fraction": 0.25, "eta_s": 6.0,
    }  # fmt: skip
    clock.now += 6.0
    assert timing.fields({"epoch": 2, "epochs": 2, "fraction": 1.0})["eta_s"] == 0.0
    assert _Timing(clock).fields({"message": "no epochs"}) == {"elapsed_s": 0.0}


def test_events_through_the_queue(queue: JobQueue) -> None:
    """What the PyTorch and TensorFlow runtimes send, as the per-job stream holds it."""
    job_id, _ = queue.enqueue(job_type=JobType.TRAINING, runtime="sklearn", request={})
    claim = queue.claim("w1", ["sklearn"], 60_000)
    assert claim is not None and claim.job_id == job_id
    ctx = QueueTrainContext(queue, job_id, claim.attempt_id)
    reporter = StepReporter(ctx, epochs=1, steps=20, learning_rate=lambda: 0.1)
    reporter.begin()
    for step in range(1, 21):
        reporter.step(1, step, loss=0.5, samples=4, correct=3)
    reporter.validation(1, {"val_loss": 0.6, "val_accuracy": 0.7}, epoch_loss=0.5)
    events: list[dict[str, Any]] = [e.data for e in queue.events(job_id) if e.kind == "progress"]
    assert [(e["phase"], e["step"]) for e in events] == [
        ("train", 0), ("train", 10), ("train", 20), ("val", 20),
    ]  # fmt: skip
    for event in events:
        assert {"epoch", "epochs", "step", "steps", "fraction", "elapsed_s", "phase"} <= set(event)
    assert "eta_s" not in events[0] and events[1]["eta_s"] >= 0 and events[-1]["eta_s"] == 0
    assert events[1]["metrics"]["train_accuracy"] == 0.75 and events[1]["loss"] == 0.5
    assert events[-1]["metrics"] == {"val_loss": 0.6, "val_accuracy": 0.7}
