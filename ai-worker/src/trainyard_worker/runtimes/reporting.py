"""Training progress events with metrics, shared by every neural-network runtime: one
throttle decides which steps are reported, so no runtime can flood the job's event stream.

Events (the data of a per-job ``progress`` event; see docs/API.md, "Progress events"):

- ``phase="train"``: a training step. ``metrics``: ``loss`` and ``train_accuracy`` (means over
  the steps since the previous train event), ``learning_rate`` (the optimizer's, now) and
  ``samples_per_s`` (training samples over the wall time since the previous event).
  One at training start (step 0, no metrics), then every :data:`EVERY_STEPS` global steps
  or every :data:`EVERY_S` seconds, whichever comes first, and always at an epoch's last step.
- ``phase="val"``: after each epoch that has a held-out set, ``metrics`` prefixed ``val_``.

The bound: a train event comes at least ``ceil(total_steps / MAX_STEP_EVENTS)`` steps after
the previous one (epoch ends excepted), so a run has at most ``MAX_STEP_EVENTS`` + 2 x epochs
+ 1 progress events (3,001 with the runtimes' 1,000-epoch limit), whatever its length;
the per-job stream keeps 10,000 entries.

Pure Python (no framework import): the supervisor side may import it too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from .base import TrainContext

__all__ = [
    "EVERY_S",
    "EVERY_STEPS",
    "MAX_STEP_EVENTS",
    "StepReporter",
    "StepThrottle",
    "fraction_done",
]

EVERY_STEPS = 10  # a train event every N global steps...
EVERY_S = 3.0  # ...or after this many seconds, whichever comes first
MAX_STEP_EVENTS = 1000  # train events per run at most, epoch ends aside

Clock = Callable[[], float]


def fraction_done(
    epoch: object, epochs: object, step: object = None, steps: object = None
) -> float | None:
    """How much of the training is done (0..1) from a 1-based ``epoch`` of ``epochs`` and
    ``step`` of ``steps`` within it (a missing step counts the epoch as done); None when
    the event has no epoch count."""
    if not isinstance(epoch, int) or not isinstance(epochs, int) or epochs <= 0:
        return None
    within = 1.0
    if isinstance(step, int) and isinstance(steps, int) and steps > 0:
        within = step / steps
    return round(min(1.0, max(0.0, (epoch - 1 + within) / epochs)), 6)


class StepThrottle:
    """Which global steps (1-based, counted over all epochs) get a train event. Pure logic
    over a clock, so it is tested with a fake one."""

    def __init__(
        self,
        total_steps: int,
        *,
        every_steps: int = EVERY_STEPS,
        every_s: float = EVERY_S,
        max_events: int = MAX_STEP_EVENTS,
        clock: Clock = time.monotonic,
    ) -> None:
        # Thinning: the longer the run, the more steps between two events, so the count
        # stays under max_events; aligned to multiples of `every` for even chart spacing.
        self.min_gap = max(1, math.ceil(total_steps / max_events))
        self.every = max(every_steps, self.min_gap)
        self.every_s = every_s
        self._clock = clock
        self._last_step = 0
        self._last_t = clock()

    def start(self) -> None:
        """Training starts now (the time-based interval counts from here)."""
        self._last_step, self._last_t = 0, self._clock()

    def due(self, global_step: int, *, force: bool = False) -> bool:
        """Whether ``global_step`` gets an event; if so, it counts as the last one."""
        now = self._clock()
        gap = global_step - self._last_step
        wanted = force or (
            gap >= self.min_gap
            and (global_step % self.every == 0 or now - self._last_t >= self.every_s)
        )
        if wanted and gap > 0:
            self._last_step, self._last_t = global_step, now
            return True
        return False


class StepReporter:
    """Accumulates per-step numbers and reports them through ``ctx`` when the throttle
    says so. ``step`` is 1-based within the 1-based ``epoch``; ``steps`` per epoch."""

    def __init__(
        self,
        ctx: TrainContext,
        *,
        epochs: int,
        steps: int,
        learning_rate: Callable[[], float] | None = None,
        clock: Clock = time.monotonic,
        throttle: StepThrottle | None = None,
    ) -> None:
        self.ctx, self.epochs, self.steps = ctx, epochs, max(1, steps)
        self._learning_rate = learning_rate
        self._clock = clock
        self.throttle = throttle or StepThrottle(epochs * self.steps, clock=clock)
        self._reset_window()
        self.events = 0  # train and val events sent (the bound's test reads it)

    def _reset_window(self) -> None:
        self._loss_sum, self._correct, self._seen, self._batches = 0.0, 0.0, 0, 0
        self._window_t = self._clock()

    def begin(self) -> None:
        """Training starts: one event at step 0 (the job's ETA clock starts with it)."""
        self.throttle.start()
        self._reset_window()
        self._send(epoch=1, step=0, phase="train", metrics=None, loss=None)

    def step(
        self, epoch: int, step: int, *, loss: float, samples: int, correct: float | None = None
    ) -> None:
        """One optimizer step: its mean ``loss`` over ``samples`` samples, ``correct`` of
        them classified right (None where the runtime does not measure it)."""
        self._loss_sum += loss * samples
        self._seen += samples
        self._batches += 1
        if correct is None or self._correct < 0:
            self._correct = -1.0  # unknown for part of the window: not reported
        else:
            self._correct += correct
        global_step = (epoch - 1) * self.steps + step
        if self.throttle.due(global_step, force=step >= self.steps):
            self._flush(epoch, step)

    def _flush(self, epoch: int, step: int) -> None:
        if not self._seen:
            return
        metrics = {"loss": self._loss_sum / self._seen}
        if self._correct >= 0:
            metrics["train_accuracy"] = self._correct / self._seen
        if self._learning_rate is not None:
            metrics["learning_rate"] = float(self._learning_rate())
        seconds = self._clock() - self._window_t
        if seconds > 0:
            metrics["samples_per_s"] = round(self._seen / seconds, 2)
        self._send(epoch=epoch, step=step, phase="train", metrics=metrics, loss=metrics["loss"])
        self._reset_window()

    def validation(
        self, epoch: int, metrics: Mapping[str, float], *, epoch_loss: float | None = None
    ) -> None:
        """The held-out metrics after ``epoch`` (names prefixed ``val_``). ``epoch_loss``,
        the epoch's mean training loss, goes in the top-level ``loss`` that older clients
        (the CLI's progress line) show."""
        bad = sorted(k for k in metrics if not k.startswith("val_"))
        if bad:
            raise ValueError(f"validation metrics must be prefixed val_: {bad}")
        self._send(
            epoch=epoch, step=self.steps, phase="val", metrics=dict(metrics), loss=epoch_loss
        )

    def _send(
        self,
        *,
        epoch: int,
        step: int,
        phase: str,
        metrics: dict[str, float] | None,
        loss: float | None,
    ) -> None:
        self.events += 1
        self.ctx.progress(
            epoch=epoch,
            epochs=self.epochs,
            step=step,
            steps=self.steps,
            fraction=fraction_done(epoch, self.epochs, step, self.steps),
            phase=phase,
            loss=loss,
            metrics=metrics,
        )
