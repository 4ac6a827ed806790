"""The long-lived inference child.

    python -m trainyard_worker.inference_host FRAMEWORK N SUPERVISOR_PID

Keeps up to N recently used models loaded (LRU) and answers one request per line of
stdin with one JSON line on the protocol stream. The supervisor kills its whole process
group on a cancel or a timeout and starts a new one when it next needs it.

Request:  {"model_id", "model_dir", "meta": {model_id, model_type, label_names, details},
           "input_data", "parameters"}
Reply:    {"ok": true, "result": {...}, "loaded": [model ids]}
          {"ok": false, "kind": "user_error" | "crashed", "error": "...", "loaded": [...]}
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any, TextIO

from .processes import die_with_parent
from .runtimes import load_runtime_module
from .runtimes.base import ModelMeta, UserError

__all__ = ["MAX_ERROR_CHARS", "ModelCache", "main"]

MAX_ERROR_CHARS = 2000


class ModelCache:
    def __init__(self, runtime: Any, capacity: int) -> None:
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


def serve(framework: str, capacity: int, requests: TextIO, replies: TextIO) -> None:
    runtime = load_runtime_module(framework)
    cache = ModelCache(runtime, capacity)
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in requests:
        if not line.strip():
            continue
        reply: dict[str, Any]
        try:
            req = json.loads(line)
            meta = ModelMeta(**req["meta"])
            model = cache.get(req["model_id"], req["model_dir"], meta)
            result = runtime.predict(model, meta, req["input_data"], req.get("parameters") or {})
            reply = {"ok": True, "result": result}
        except UserError as exc:
            reply = {"ok": False, "kind": "user_error", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001  # one bad request must not end the host
            traceback.print_exc(file=sys.stderr)
            reply = {"ok": False, "kind": "crashed", "error": f"{type(exc).__name__}: {exc}"}
        if len(reply.get("error", "")) > MAX_ERROR_CHARS:  # it may quote a huge input
            reply["error"] = reply["error"][: MAX_ERROR_CHARS - 3] + "..."
        reply["loaded"] = cache.loaded()
        replies.write(json.dumps(reply) + "\n")
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
