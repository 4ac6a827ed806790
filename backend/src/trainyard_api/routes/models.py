"""Models registered by successful training jobs."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ValidationError

from trainyard.schema import ID_PATTERN, ModelRecord

from ..deps import QueueDep
from ..errors import ApiError, error_responses
from ..service import to_model

__all__ = ["ModelList", "router"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["models"])


class ModelList(BaseModel):
    models: list[ModelRecord]


@router.get(
    "/models",
    response_model=ModelList,
    responses=error_responses(422, 503),
    summary="Registered models, newest first",
)
def list_models(queue: QueueDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> ModelList:
    models: list[ModelRecord] = []
    for raw in queue.list_models(limit=limit):
        try:
            models.append(to_model(raw))
        except ValidationError as exc:
            # One bad record (an older worker's) must not hide all the others.
            log.warning("skipping malformed model record %r: %s", raw.get("model_id"), exc)
    return ModelList(models=models)


@router.get(
    "/models/{model_id}",
    response_model=ModelRecord,
    responses=error_responses(404, 422, 503),
    summary="One model",
)
def get_model(model_id: Annotated[str, Path(pattern=ID_PATTERN)], queue: QueueDep) -> ModelRecord:
    raw = queue.get_model(model_id)
    if raw is None:
        raise ApiError(404, f"no model {model_id!r}", field="model_id")
    try:
        return to_model(raw)
    except ValidationError as exc:
        raise ApiError(500, f"model record {model_id!r} is malformed: {exc}") from exc
