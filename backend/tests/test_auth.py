"""API keys: off by default; with keys configured, every route except the health check
and the docs answers 401 to a missing or wrong key, in the error shape, and changes
nothing; a valid key (bearer or X-API-Key) gets through. Keys never reach logs or reprs."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from redis import Redis

from conftest import assert_error
from trainyard_api.app import create_app
from trainyard_api.auth import OPEN_PATHS, KeyRing
from trainyard_api.config import Settings

KEY = "tk_live_7f3a9c2e5b1d4f608a9e"
OTHER_KEY = "tk_live_second_key_0123456789"


@pytest.fixture
def keyed(settings: Settings, redis_client: Redis) -> Iterator[TestClient]:
    keyed_settings = settings.model_copy(
        update={"api_keys": [SecretStr(KEY), SecretStr(OTHER_KEY)]}
    )
    with TestClient(create_app(keyed_settings)) as c:
        yield c


def _every_operation(client: TestClient) -> list[tuple[str, str]]:
    """(method, concrete path) for every operation in the served schema."""
    ops = []
    for path, operations in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        concrete = path.replace("{job_id}", "abc123").replace("{model_id}", "m1")
        for method in operations:
            ops.append((method.upper(), concrete))
    return ops


def _keyspace(redis_client: Redis) -> dict[str, Any]:
    return {key: redis_client.type(key) for key in redis_client.scan_iter(count=1000)}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-wrong-key-wrong"},
        {"X-API-Key": KEY[:-1]},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "wrong-bearer", "truncated", "basic-scheme", "empty-bearer"],
)
def test_every_protected_route_answers_401_and_changes_nothing(
    keyed: TestClient, redis_client: Redis, headers: dict[str, str]
) -> None:
    redis_client.set("marker", "1")  # something to see change, if anything did
    before = _keyspace(redis_client)
    ops = [op for op in _every_operation(keyed) if op[1] not in OPEN_PATHS]
    assert len(ops) >= 15  # every resource: jobs, dead letters, models, workers, queues, ...
    for method, path in ops:
        resp = keyed.request(method, path, headers=headers, json={"model_type": "svm"})
        err = assert_error(resp, 401, "unauthorized", "Authorization")
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert KEY not in resp.text
        assert err["message"].startswith(("no API key sent", "the API key is not valid"))
    # Unknown paths too: a 404 would tell a caller without a key which routes exist.
    assert_error(keyed.get("/no/such/path"), 401, "unauthorized")
    assert _keyspace(redis_client) == before


def test_a_valid_key_gets_through_as_bearer_or_header(keyed: TestClient) -> None:
    for headers in (
        {"Authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {OTHER_KEY}"},
        {"X-API-Key": KEY},
    ):
        assert keyed.get("/jobs", headers=headers).status_code == 200
    resp = keyed.post(
        "/jobs/training",
        headers={"X-API-Key": KEY},
        json={"model_type": "svm", "data_path": "/data/tabular_data.csv"},
    )
    assert resp.status_code == 202, resp.text


def test_health_and_docs_stay_open(keyed: TestClient) -> None:
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/docs").status_code == 200
    assert keyed.get("/redoc").status_code == 200
    schema = keyed.get("/openapi.json").json()
    # The schema says which operations need a key and that they may answer 401.
    assert {"bearer", "apiKey"} <= set(schema["components"]["securitySchemes"])
    training = schema["paths"]["/jobs/training"]["post"]
    assert training["security"] and "401" in training["responses"]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_keys_are_off_by_default(client: TestClient) -> None:
    assert client.get("/jobs").status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_every_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    ring = KeyRing([KEY, OTHER_KEY, "a-third-key-0123456789"])
    for presented, expected in ((KEY, True), (OTHER_KEY, True), ("nope", False)):
        calls.clear()
        assert ring.accepts(presented.encode()) is expected
        assert len(calls) == 3  # all keys, whichever matched: no early exit
    assert not ring.accepts(None)


def test_keys_never_reach_reprs_errors_or_logs(
    settings: Settings, redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    keyed_settings = settings.model_copy(update={"api_keys": [SecretStr(KEY)]})
    assert KEY not in repr(keyed_settings) and KEY not in str(keyed_settings.model_dump())
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(keyed_settings)) as c:
        c.get("/jobs", headers={"Authorization": f"Bearer {KEY}"})
        c.get("/jobs", headers={"Authorization": f"Bearer {KEY}x"})
    assert KEY not in caplog.text
    with pytest.raises(ValidationError) as refused:
        Settings(api_keys="short-key", _env_file=None)  # type: ignore[call-arg, arg-type]
    assert "short-key" not in str(refused.value) and "16 characters" in str(refused.value)


def test_keys_come_from_the_environment_and_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# rotated 2026-11\n{OTHER_KEY}\n\n")
    monkeypatch.setenv("API_KEYS", f"{KEY}, ")
    monkeypatch.setenv("API_KEYS_FILE", str(keys_file))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert [k.get_secret_value() for k in settings.api_keys] == [KEY, OTHER_KEY]


def test_required_keys_fail_closed_when_none_is_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("API_KEYS", raising=False)
    monkeypatch.setenv("REQUIRE_API_KEYS", "true")
    with pytest.raises(ValidationError, match="no API key is configured"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("API_KEYS_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="api_keys_file: cannot read it"):
        Settings(_env_file=None)  # type: ignore[call-arg]
