"""The long-lived inference child.

    python -m trainyard_worker.inference_host FRAMEWORK N SUPERVISOR_PID

Keeps up to N recently used models loaded (LRU) and answers one batch request per line of
stdin (:class:`~.protocol.BatchRequest`) with one reply line on the protocol stream
(:class:`~.protocol.BatchReply`, one answer per job). The jobs of a batch that ask the same
model with the same parameters go through the runtime's ``predict_many`` together: one
model call. The supervisor kills the whole process group on a cancel or a timeout of
every job of the batch and starts a new host when it next needs one.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from .processes import die_with_parent
from .protocol import BatchReply, BatchRequest, HostReady, ItemReply, ModelRef, PredictItem
from .runtimes import load_runtime_module
from .runtimes.base import ModelMeta, UserError

__all__ = ["MAX_ERROR_CHARS", "ModelCache", "answer_batch", "main"]

MAX_ERROR_CHARS = 2000

PredictMany = Callable[
    [Any, ModelMeta, list[str | list[str]], dict[str, Any]], Sequence[dict[str, Any] | UserError]
]


class ModelCache:
    def __init__(self, runtime: ModuleType, capacity: int) -> None:
        self._runtime = runtime
        self._capacity = capacity
        self._models: OrderedDict[str, tuple[str, Any]] = OrderedDict()

    def get(self, model_id: str, model_dir: str, meta: ModelMeta) -> Any:
        cached = self._models.get(model_id)
        # A model id re-registered by a newer training job has a new artifact folder.
        if cached is not None and cached[0] == model_dir:
            self._models.move_to_end(model_id)
            return cached[1]
        model = self._runtime.load(Path(model_dir), meta)
        self._models[model_id] = (model_dir, model)
        self._models.move_to_end(model_id)
        while len(self._models) > self._capacity:
            self._models.popitem(last=False)
        return model

    def loaded(self) -> list[str]:
        return list(self._models)


def _cut(message: str) -> str:
    # A reason may quote a huge input: it must not become a huge job record and event.
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 3] + "..."


def _crash(exc: BaseException) -> str:
    traceback.print_exc(file=sys.stderr)  # the supervisor logs the host's stderr
    return _cut(f"{type(exc).__name__}: {exc}")


def _predict_many(runtime: ModuleType) -> PredictMany:
    fn: PredictMany | None = getattr(runtime, "predict_many", None)
    if fn is not None:
        return fn

    def one_by_one(
        model: Any, meta: ModelMeta, inputs: list[str | list[str]], parameters: dict[str, Any]
    ) -> list[dict[str, Any] | UserError]:
        out: list[dict[str, Any] | UserError] = []
        for input_data in inputs:
            try:
                out.append(runtime.predict(model, meta, input_data, parameters))
            except UserError as exc:
                out.append(exc)
        return out

    return one_by_one


def _group(items: list[PredictItem]) -> dict[tuple[str, str], list[int]]:
    """Item indexes by (model, parameters): what one model call can answer together."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, item in enumerate(items):
        key = (item.model_id, json.dumps(item.parameters, sort_keys=True))
        groups.setdefault(key, []).append(i)
    return groups


def _run_group(
    predict_many: PredictMany, model: Any, meta: ModelMeta, items: list[PredictItem]
) -> list[ItemReply]:
    size = len(items)
    inputs = [item.input_data for item in items]
    try:
        results = list(predict_many(model, meta, inputs, items[0].parameters))
        if len(results) != size:
            raise RuntimeError(f"predict_many answered {len(results)} of {size} inputs")
    except UserError as exc:  # the parameters themselves: every job of the group
        return [ItemReply(i.job_id, False, kind="user_error", error=_cut(str(exc)),
                          batch_size=size) for i in items]  # fmt: skip
    except Exception as exc:  # noqa: BLE001  # the host must answer every job
        if size == 1:
            return [ItemReply(items[0].job_id, False, kind="crashed", error=_crash(exc))]
        # One input may have crashed the shared call: each on its own, so the others
        # succeed and only that job is retried.
        _crash(exc)
        return [r for item in items for r in _run_group(predict_many, model, meta, [item])]
    replies = []
    for item, result in zip(items, results, strict=True):
        if isinstance(result, UserError):
            replies.append(ItemReply(item.job_id, False, kind="user_error",
                                     error=_cut(str(result)), batch_size=size))  # fmt: skip
        else:
            replies.append(ItemReply(item.job_id, True, result=result, batch_size=size))
    return replies


def answer_batch(
    cache: ModelCache, predict_many: PredictMany, request: BatchRequest
) -> list[ItemReply]:
    """One reply per job of ``request``, in its order."""
    models: dict[str, ModelRef] = {m.model_id: m for m in request.models}
    replies: dict[int, ItemReply] = {}
    for (model_id, _), indexes in _group(request.items).items():
        items = [request.items[i] for i in indexes]
        ref = models.get(model_id)
        group: list[ItemReply]
        try:
            if ref is None:
                raise RuntimeError(f"the batch names no model {model_id!r}")
            meta = ModelMeta(ref.model_id, ref.model_type, ref.label_names, ref.details)
            model = cache.get(ref.model_id, ref.model_dir, meta)
        except UserError as exc:
            group = [ItemReply(i.job_id, False, kind="user_error", error=_cut(str(exc)))
                     for i in items]  # fmt: skip
        except Exception as exc:  # noqa: BLE001  # a model that fails to load: retried
            error = _crash(exc)
            group = [ItemReply(i.job_id, False, kind="crashed", error=error) for i in items]
        else:
            group = _run_group(predict_many, model, meta, items)
        replies.update(zip(indexes, group, strict=True))
    return [replies[i] for i in range(len(request.items))]


def serve(framework: str, capacity: int, requests: TextIO, replies: TextIO) -> None:
    runtime = load_runtime_module(framework)
    cache = ModelCache(runtime, capacity)
    predict_many = _predict_many(runtime)
    replies.write(HostReady.to_line())
    replies.flush()
    for line in requests:
        if not line.strip():
            continue
        # A line the supervisor wrote; one it cannot have written ends the host (the
        # supervisor then retries the batch as a crash).
        request = BatchRequest.from_wire(json.loads(line))
        reply = BatchReply(request.batch_id, answer_batch(cache, predict_many, request),
                           cache.loaded())  # fmt: skip
        replies.write(reply.to_line())
        replies.flush()


def main() -> int:
    framework, capacity = sys.argv[1], int(sys.argv[2])
    die_with_parent(int(sys.argv[3]))
    # The protocol owns the original stdout; anything a framework prints goes to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(framework, capacity, sys.stdin, protocol)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
