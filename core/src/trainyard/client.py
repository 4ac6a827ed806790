"""A small synchronous Python client for Trainyard's HTTP API.

    from trainyard.client import Client
    from trainyard.schema import InferenceJobRequest

    with Client("http://localhost:8000") as ty:
        job = ty.train("random_forest", "/data/tabular_data.csv", {"n_estimators": 100})
        final = job.wait(timeout=600)          # follows GET /jobs/{id}/events
        model_id = final["model_id"]
        print(ty.infer(model_id, "5.1,3.5,1.4,0.2", wait=30).result())

        # Many jobs in one request (POST /jobs/batch), one typed result per job:
        rows = ["5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3"]
        jobs = [InferenceJobRequest(model_id=model_id, input_data=row) for row in rows]
        for result in ty.submit_many(jobs):
            print(result.index, result.status_code, result.job or result.error)

Every non-2xx answer raises :class:`TrainyardError` built from the API's error shape
``{"error": {"status", "code", "message", "details": [{"field", "reason"}]}}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx

if TYPE_CHECKING:  # imported when used: pydantic would add ~0.3 s to every CLI start
    from .schema import BatchJobResult, InferenceJobRequest, TrainingJobRequest

__all__ = ["TERMINAL", "Client", "JobFailed", "JobHandle", "TrainyardError"]

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "dead"})


class TrainyardError(Exception):
    """The API refused a request (or answered something that is not its error shape)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []

    @property
    def fields(self) -> list[str]:
        """The request fields the API named as at fault."""
        return [d.get("field", "") for d in self.details]

    @classmethod
    def from_response(cls, response: httpx.Response) -> TrainyardError:
        try:
            body = response.json()
            error = body["error"]
            return cls(
                int(error.get("status", response.status_code)),
                str(error.get("code", "error")),
                str(error.get("message", "")),
                [
                    {"field": str(d.get("field", "")), "reason": str(d.get("reason", ""))}
                    for d in error.get("details") or []
                ],
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            text = response.text[:500] if response.content else response.reason_phrase
            return cls(response.status_code, "http_error", text)


class JobFailed(Exception):
    """The job ended without succeeding; ``status`` is its final status dict."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.state = str(status.get("status"))
        self.error = status.get("error")
        self.error_kind = status.get("error_kind")
        super().__init__(
            f"job {status.get('job_id')} {self.state}"
            + (f" ({self.error_kind})" if self.error_kind else "")
            + (f": {self.error}" if self.error else "")
        )


# Reconnection attempts (0.5 s apart) before a follow gives up on an unreachable backend.
MAX_RECONNECTS = 20


class JobHandle:
    """A submitted job. Cheap to create: it holds only the id and the client."""

    def __init__(
        self, client: Client, job_id: str, submitted: dict[str, Any] | None = None
    ) -> None:
        self._client = client
        self.id = job_id
        #: The status the submission returned (None for a handle made with ``Client.job``).
        self.submitted = submitted

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    def status(self) -> dict[str, Any]:
        return self._client._get(f"/jobs/{self.id}/status")

    def record(self) -> dict[str, Any]:
        """The full job record (``GET /jobs/{id}``): status plus request and holder."""
        return self._client._get(f"/jobs/{self.id}")

    def cancel(self) -> dict[str, Any]:
        """Cancel the job; a 409 (it already ended) raises :class:`TrainyardError`."""
        return self._client._request("POST", f"/jobs/{self.id}/cancel")

    def redrive(self) -> JobHandle:
        """Run this dead job again as a new job (the same one if it was redriven before);
        a job that is not dead raises :class:`TrainyardError` (409)."""
        status = self._client._request("POST", f"/jobs/{self.id}/redrive")
        return JobHandle(self._client, str(status["job_id"]), status)

    def logs(self, after: str = "0", limit: int = 1000) -> list[dict[str, Any]]:
        body = self._client._get(f"/jobs/{self.id}/logs", params={"after": after, "limit": limit})
        return list(body.get("lines", []))

    def events(self, after: str = "0", timeout: float = 600.0) -> Iterator[dict[str, Any]]:
        """Follow the job's Server-Sent Events until the job ends; each item is
        ``{"id", "kind", "data"}``. Reconnects (resuming after the last id) if the
        connection drops; raises :class:`TimeoutError` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last = after
        refused = 0  # connection failures in a row: a backend that is gone, not a blip
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {self.id} did not end within {timeout}s")
            try:
                for event in self._client._sse(f"/jobs/{self.id}/events", last, remaining):
                    refused = 0
                    last = event["id"] or last
                    yield event
                    if event["kind"] == "state" and event["data"].get("state") in TERMINAL:
                        return
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"job {self.id} did not end within {timeout}s")
            except httpx.TimeoutException:
                continue  # the loop head decides: out of time, or read again
            except httpx.ConnectError:
                refused += 1
                if refused >= MAX_RECONNECTS:
                    raise
                time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
                continue
            except httpx.TransportError:
                time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
                continue
            # The stream ended without a final state (a proxy cut it, or the job ended
            # before we connected and the server closed after draining): check directly.
            if self.status().get("status") in TERMINAL:
                return
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))  # no tight reconnect loop

    def wait(self, timeout: float = 600.0, poll: float | None = None) -> dict[str, Any]:
        """Block until the job ends and return its final status dict. Follows the event
        stream; with ``poll`` (seconds) polls ``GET /jobs/{id}/status`` instead. Raises
        :class:`TimeoutError` if it has not ended within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        status = self.status()
        if status.get("status") in TERMINAL:
            return status
        if poll is None:
            for _ in self.events(timeout=max(deadline - time.monotonic(), 0.001)):
                pass
            return self.status()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {self.id} did not end within {timeout}s")
            time.sleep(min(poll, remaining))
            status = self.status()
            if status.get("status") in TERMINAL:
                return status

    def result(self, timeout: float = 600.0, poll: float | None = None) -> dict[str, Any]:
        """Wait for the job and return its result; :class:`JobFailed` if it did not
        succeed."""
        status = self.wait(timeout=timeout, poll=poll)
        if status.get("status") != "succeeded":
            raise JobFailed(status)
        result = status.get("result")
        return dict(result) if isinstance(result, dict) else {}


class Client:
    """A synchronous client for one Trainyard API. Use as a context manager, or call
    :meth:`close` when done."""

    def __init__(
        self,
        base_url: str = "http://localhost:8000",
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "trainyard-client"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
            headers["X-API-Key"] = api_key
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- jobs ------------------------------------------------------------------------

    def train(
        self,
        model_type: str,
        data_path: str,
        hyperparameters: dict[str, Any] | None = None,
        wait: float | None = None,
        **options: Any,
    ) -> JobHandle:
        """Submit a training job. ``options`` are the request's other fields:
        description, requires_gpu, framework_override, model_name, label_column,
        priority, max_attempts, timeout_s, queue_ttl_s, idempotency_key. With ``wait``
        (seconds) the API holds the answer until the job ends or the time is up; the
        handle's ``submitted`` then already holds the final status."""
        body = {
            "model_type": model_type,
            "data_path": data_path,
            "hyperparameters": hyperparameters or {},
            **_drop_none(options),
        }
        return self.submit("training", body, wait=wait)

    def infer(
        self,
        model_id: str,
        input_data: str | list[str],
        parameters: dict[str, Any] | None = None,
        wait: float | None = None,
        **options: Any,
    ) -> JobHandle:
        """Submit an inference job. With ``wait`` (seconds) the API holds the answer
        until the job ends or the time is up; the handle's ``submitted`` then already
        holds the final status."""
        body = {
            "model_id": model_id,
            "input_data": input_data,
            "parameters": parameters or {},
            **_drop_none(options),
        }
        return self.submit("inference", body, wait=wait)

    def submit(self, job_type: str, body: dict[str, Any], wait: float | None = None) -> JobHandle:
        """Submit a request body as it is (``job_type`` ``training`` or ``inference``),
        e.g. one of the seed README's bodies. ``wait`` (seconds) holds the answer until
        the job ends or the time is up."""
        params = {"wait": wait} if wait else None
        read_timeout = self.timeout + (wait or 0)
        status = self._request(
            "POST", f"/jobs/{job_type}", json=body, params=params, timeout=read_timeout
        )
        return JobHandle(self, str(status["job_id"]), status)

    def submit_many(
        self, jobs: Sequence[TrainingJobRequest | InferenceJobRequest]
    ) -> list[BatchJobResult]:
        """Submit up to 1000 training and inference jobs in one request
        (``POST /jobs/batch``). Returns one result per job, in order: ``job`` (its status)
        when it was queued (``status_code`` 202) or an idempotent replay (200), else
        ``error`` with the status its single submission would have answered and the
        fields at fault (``jobs[<index>].<field>``). A job refused does not refuse the
        others; a batch the API refuses as a whole (no job, more than 1000, a body over
        the size limit) raises :class:`TrainyardError`."""
        from .schema import BatchSubmitResponse

        if not jobs:
            return []
        body = {"jobs": [_batch_job(job) for job in jobs]}
        reply = self._request("POST", "/jobs/batch", json=body)
        return BatchSubmitResponse.model_validate(reply).results

    def job(self, job_id: str) -> JobHandle:
        return JobHandle(self, job_id)

    def jobs(
        self,
        state: str | None = None,
        runtime: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` jobs, newest first, following the API's cursor pages."""
        params = {"state": state, "runtime": runtime, "job_type": job_type}
        return self._pages("/jobs", params, limit)

    def dead_letters(
        self,
        runtime: str | None = None,
        job_type: str | None = None,
        redriven: bool | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` dead jobs (out of attempts), newest first."""
        params = {"runtime": runtime, "job_type": job_type, "redriven": redriven}
        return self._pages("/dead-letters", params, limit)

    def redrive_dead_letters(
        self,
        runtime: str | None = None,
        job_type: str | None = None,
        error_kind: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Redrive the dead jobs not redriven yet that match; ``{"redriven", "more"}``."""
        body = _drop_none(
            {"runtime": runtime, "job_type": job_type, "error_kind": error_kind, "limit": limit}
        )
        return self._request("POST", "/dead-letters/redrive", json=body)

    def _pages(self, path: str, filters: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(found) < limit:
            params = _drop_none(
                {**filters, "cursor": cursor, "limit": min(limit - len(found), 200)}
            )
            page = self._get(path, params=params)
            found.extend(page.get("jobs", []))
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return found[:limit]

    # -- the rest --------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        return list(self._get("/models").get("models", []))

    def model(self, model_id: str) -> dict[str, Any]:
        return self._get(f"/models/{model_id}")

    def workers(self) -> list[dict[str, Any]]:
        return list(self._get("/workers").get("workers", []))

    def queues(self) -> dict[str, Any]:
        return self._get("/queues")

    def health(self) -> dict[str, Any]:
        return self._get("/health")

    # -- plumbing --------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._request("GET", path, params=params)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        response = self._http.request(
            method,
            path,
            json=json,
            params=params,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        if response.is_error:
            raise TrainyardError.from_response(response)
        body = response.json()
        if not isinstance(body, dict):
            raise TrainyardError(response.status_code, "bad_response", "expected a JSON object")
        return body

    def _sse(self, path: str, after: str, timeout: float) -> Iterator[dict[str, Any]]:
        """Parse a text/event-stream answer into ``{"id", "kind", "data"}`` items."""
        headers = {"Accept": "text/event-stream"}
        if after and after != "0":
            headers["Last-Event-ID"] = after
        read = httpx.Timeout(self.timeout, read=max(min(timeout, self.timeout), 0.001))
        with self._http.stream("GET", path, headers=headers, timeout=read) as response:
            if response.is_error:
                response.read()
                raise TrainyardError.from_response(response)
            event_id, kind = "", "message"
            data: list[str] = []
            for line in response.iter_lines():
                if line == "":
                    if data:
                        yield {"id": event_id, "kind": kind, "data": _json_object("\n".join(data))}
                    event_id, kind, data = "", "message", []
                elif line.startswith(":"):
                    continue  # a keepalive comment
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "id":
                        event_id = value
                    elif name == "event":
                        kind = value
                    elif name == "data":
                        data.append(value)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"text": text}
    return value if isinstance(value, dict) else {"value": value}


def _batch_job(job: TrainingJobRequest | InferenceJobRequest) -> dict[str, Any]:
    """One job of a batch body: the fields the caller set, and the job's ``type``."""
    from .schema import InferenceJobRequest, TrainingJobRequest

    if isinstance(job, TrainingJobRequest):
        kind = "training"
    elif isinstance(job, InferenceJobRequest):
        kind = "inference"
    else:
        raise TypeError(f"a TrainingJobRequest or InferenceJobRequest, not {type(job).__name__}")
    return {**job.model_dump(mode="json", exclude_unset=True, exclude={"type"}), "type": kind}


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
