"""The ``trainyard`` command line against a scripted API (httpx.MockTransport through the
client): parsing, the bodies it sends, rendering and exit codes. The real system is driven
in tests/e2e/test_cli.py."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_replies import status_reply

from trainyard import cli, cli_render
from trainyard.cli import build_parser, main, parse_key_value

Handler = Callable[[httpx.Request], httpx.Response]
URL = "http://api.test"


def _status(job_id: str = "j1", state: str = "queued", **extra: Any) -> dict[str, Any]:
    return status_reply(job_id, state, **{"attempt": 1, "max_attempts": 3, **extra})


def _error(status: int, message: str, field: str = "") -> httpx.Response:
    details = [{"field": field, "reason": message}] if field else []
    body = {"error": {"status": status, "code": "x", "message": message, "details": details}}
    return httpx.Response(status, json=body)


def _run(handler: Handler, *argv: str) -> int:
    return main(["--url", URL, *argv], transport=httpx.MockTransport(handler))


def _sse(*events: tuple[str, dict[str, Any]]) -> str:
    return "".join(
        f"id: {i + 1}-0\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
        for i, (kind, data) in enumerate(events)
    )


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("n_estimators=100", ("n_estimators", 100)),
        ("lr=0.01", ("lr", 0.01)),
        ("bootstrap=false", ("bootstrap", False)),
        ("max_depth=null", ("max_depth", None)),
        ("max_features=sqrt", ("max_features", "sqrt")),
        ("name=a=b", ("name", "a=b")),
        ('quoted="7"', ("quoted", "7")),
        ("empty=", ("empty", "")),
        ("x=NaN", ("x", "NaN")),  # not JSON: kept as text, never sent as NaN
        ("layers=[1,2]", ("layers", [1, 2])),
    ],
)
def test_key_values_parse_as_json_when_they_parse_else_text(
    item: str, expected: tuple[str, Any]
) -> None:
    assert parse_key_value(item) == expected


@pytest.mark.parametrize("item", ["novalue", "=3", " =3"])
def test_a_key_value_without_a_key_is_a_usage_error(
    item: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["submit", "training", "--hp", item])
    assert exc.value.code == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_url_defaults_to_the_environment_then_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAINYARD_URL", raising=False)
    assert build_parser().parse_args(["models"]).url == "http://localhost:8000"
    monkeypatch.setenv("TRAINYARD_URL", "http://ty:9000")
    assert build_parser().parse_args(["models"]).url == "http://ty:9000"
    assert build_parser().parse_args(["--url", "http://a", "models"]).url == "http://a"


def test_global_options_also_work_after_the_subcommand() -> None:
    args = build_parser().parse_args(["--url", "http://a", "jobs", "--json"])
    assert (args.url, args.json) == ("http://a", True)
    args = build_parser().parse_args(["--json", "jobs", "--url", "http://b"])
    assert (args.url, args.json) == ("http://b", True)
    args = build_parser().parse_args(["--json", "status", "j1"])  # not reset by the subparser
    assert args.json is True


def test_up_keeps_its_options() -> None:
    args = build_parser().parse_args(
        ["up", "--port", "9001", "--worker", "sklearn=/py", "--redis-port", "7000"]
    )
    assert args.func is cli._cmd_up
    assert (args.port, args.worker, args.redis_port, args.host) == (
        9001,
        ["sklearn=/py"],
        7000,
        "127.0.0.1",
    )


# -- bodies sent -----------------------------------------------------------------------


class Recorder:
    """A scripted API that records requests and answers from a path -> response table."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.get((request.method, request.url.path))
        if answer is None:
            return _error(404, f"no route {request.url.path}")
        if callable(answer):
            result: httpx.Response = answer(request)
            return result
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)

    def body(self, i: int = 0) -> Any:
        return json.loads(self.requests[i].content)


def test_submit_training_sends_the_flags_as_the_seed_body(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = Recorder({("POST", "/jobs/training"): httpx.Response(202, json=_status("abc"))})
    rc = _run(
        api,
        "submit",
        "training",
        "--model-type",
        "random_forest",
        "--data-path",
        "/data/tabular_data.csv",
        "--hp",
        "n_estimators=100",
        "--hp",
        "max_depth=10",
        "--framework-override",
        "sklearn",
        "--requires-gpu",
        "--model-name",
        "rf1",
        "--label-column",
        "y",
        "--priority",
        "high",
        "--timeout",
        "60",
        "--description",
        "d",
        "--idempotency-key",
        "k1",
    )
    assert rc == 0
    assert api.body() == {
        "model_type": "random_forest",
        "data_path": "/data/tabular_data.csv",
        "hyperparameters": {"n_estimators": 100, "max_depth": 10},
        "framework_override": "sklearn",
        "requires_gpu": True,
        "model_name": "rf1",
        "label_column": "y",
        "priority": "high",
        "timeout_s": 60.0,
        "description": "d",
        "idempotency_key": "k1",
    }
    out = capsys.readouterr().out
    assert "job abc queued" in out and "trainyard status abc --follow" in out


def test_submit_training_leaves_out_flags_not_given() -> None:
    api = Recorder({("POST", "/jobs/training"): httpx.Response(202, json=_status())})
    assert _run(api, "submit", "training", "--model-type", "svm", "--data-path", "/d.csv") == 0
    assert api.body() == {"model_type": "svm", "data_path": "/d.csv", "hyperparameters": {}}


def test_submit_training_body_file_is_sent_verbatim_and_flags_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = {
        "model_type": "random_forest",
        "data_path": "/data/tabular_data.csv",
        "hyperparameters": {"n_estimators": 100},
        "description": "Train Random Forest for classification",
        "requires_gpu": False,
        "framework_override": "sklearn",
    }
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))
    api = Recorder({("POST", "/jobs/training"): httpx.Response(202, json=_status())})
    assert _run(api, "submit", "training", "--body", str(path)) == 0
    assert api.body() == seed
    assert (
        _run(
            api,
            "submit",
            "training",
            "--body",
            str(path),
            "--hp",
            "max_depth=3",
            "--model-name",
            "m",
        )
        == 0
    )
    assert api.body(1) == {
        **seed,
        "hyperparameters": {"n_estimators": 100, "max_depth": 3},
        "model_name": "m",
    }
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"model_type": "x"})))
    assert _run(api, "submit", "training", "--body", "-") == 0
    assert api.body(2) == {"model_type": "x"}  # the API says what is missing


@pytest.mark.parametrize(
    ("content", "message"), [("{nope", "not valid JSON"), ("[1]", "expected a JSON object")]
)
def test_a_bad_body_file_is_exit_2_before_any_request(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "b.json"
    path.write_text(content)
    api = Recorder({})
    assert _run(api, "submit", "training", "--body", str(path)) == 2
    assert message in capsys.readouterr().err and not api.requests
    assert _run(api, "submit", "training", "--body", str(tmp_path / "missing.json")) == 2


def test_submit_training_without_model_type_or_data_path_is_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = Recorder({})
    assert _run(api, "submit", "training", "--model-type", "svm") == 2
    assert "--data-path" in capsys.readouterr().err and not api.requests


def test_submit_inference_sends_one_input_or_a_batch_and_parameters() -> None:
    api = Recorder({("POST", "/jobs/inference"): httpx.Response(202, json=_status())})
    assert (
        _run(
            api,
            "submit",
            "inference",
            "--model-id",
            "m1",
            "--input",
            "5.1,3.5,1.4,0.2",
            "--param",
            "probability=true",
        )
        == 0
    )
    assert api.body() == {
        "model_id": "m1",
        "input_data": "5.1,3.5,1.4,0.2",
        "parameters": {"probability": True},
    }
    assert "wait" not in api.requests[0].url.params
    assert (
        _run(api, "submit", "inference", "--model-id", "m1", "--input", "1,2", "--input", "3,4")
        == 0
    )
    assert api.body(1)["input_data"] == ["1,2", "3,4"]


def test_submit_inference_wait_asks_the_api_to_hold_and_prints_the_prediction(
    capsys: pytest.CaptureFixture[str],
) -> None:
    done = _status(
        "i1",
        "succeeded",
        job_type="inference",
        model_id="m1",
        result={"model_id": "m1", "prediction": "setosa", "probabilities": {"setosa": 1.0}},
    )
    api = Recorder({("POST", "/jobs/inference"): done})
    assert _run(api, "submit", "inference", "--model-id", "m1", "--input", "1", "--wait") == 0
    assert float(api.requests[0].url.params["wait"]) > 0
    out = capsys.readouterr().out
    assert "prediction:" in out and "setosa" in out and "succeeded" in out


# -- following -------------------------------------------------------------------------


def _submit_and_wait(final: dict[str, Any]) -> int:
    answers: dict[tuple[str, str], Any] = {}
    api = Recorder(answers)
    events = _sse(
        ("state", {"state": "queued"}),
        ("state", {"state": "running"}),
        ("progress", {"epoch": 1, "epochs": 2, "loss": 0.5}),
        ("log", {"line": "hello", "stream": "stdout"}),
        ("state", {"state": final["status"]}),
    )
    answers[("POST", "/jobs/training")] = httpx.Response(202, json=_status("j1"))
    answers[("GET", "/jobs/j1/events")] = lambda _: httpx.Response(
        200, text=events, headers={"content-type": "text/event-stream"}
    )
    answers[("GET", "/jobs/j1/status")] = final
    return _run(api, "submit", "training", "--model-type", "svm", "--data-path", "/d", "--wait")


def test_wait_follows_the_events_and_exits_0_on_success_with_plain_lines_off_a_tty(
    capsys: pytest.CaptureFixture[str],
) -> None:
    final = _status("j1", "succeeded", model_id="svm_1", result={"metrics": {"accuracy": 0.97}})
    assert _submit_and_wait(final) == 0
    captured = capsys.readouterr()
    assert "succeeded" in captured.out and "svm_1" in captured.out
    assert "accuracy=0.97" in captured.out
    assert "\r" not in captured.err  # not a TTY: plain lines
    lines = captured.err.splitlines()
    assert lines[0].startswith("j1  queued") and any("succeeded" in x for x in lines)
    assert any("epoch 1/2" in x and "loss 0.5000" in x for x in lines)


def test_wait_exits_1_and_prints_the_error_when_the_job_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    final = _status("j1", "failed", error="data_path: no such file", error_kind="user")
    assert _submit_and_wait(final) == 1
    captured = capsys.readouterr()
    assert "error:" in captured.out and "no such file" in captured.out
    assert "j1 failed: data_path: no such file" in captured.err


def test_on_a_tty_the_progress_is_one_redrawn_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    final = _status("j1", "succeeded", model_id="m")
    assert _submit_and_wait(final) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n")
    assert err.count("\r") >= 4 and "\x1b[K" in err
    assert "[##########..........]  50%" in err


def test_status_follow_on_an_ended_job_does_not_open_the_stream(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = Recorder({("GET", "/jobs/j1/status"): _status("j1", "cancelled")})
    assert _run(api, "status", "j1", "--follow") == 1
    assert [r.url.path for r in api.requests] == ["/jobs/j1/status", "/jobs/j1/status"]
    assert "cancelled" in capsys.readouterr().out


def test_logs_prints_the_lines_and_follows_new_ones(capsys: pytest.CaptureFixture[str]) -> None:
    lines = [{"id": "5-0", "stream": "stdout", "line": "first", "time": "2026-01-01T00:00:00Z"}]
    stream = _sse(("log", {"line": "second", "stream": "stderr"}), ("state", {"state": "failed"}))
    seen_after: list[str | None] = []

    def events(request: httpx.Request) -> httpx.Response:
        seen_after.append(request.headers.get("Last-Event-ID"))
        return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})

    api = Recorder(
        {
            ("GET", "/jobs/j1/logs"): {"job_id": "j1", "lines": lines},
            ("GET", "/jobs/j1/status"): _status("j1", "running"),
            ("GET", "/jobs/j1/events"): events,
        }
    )
    assert _run(api, "logs", "j1") == 0
    assert capsys.readouterr().out == "first\n"
    assert _run(api, "logs", "j1", "--follow") == 0
    assert capsys.readouterr().out == "first\nsecond\n"
    assert seen_after == ["5-0"]  # resumes after the last line it printed
    assert _run(api, "logs", "j1", "-t") == 0
    assert "stdout  first" in capsys.readouterr().out


# -- the other commands ----------------------------------------------------------------


def test_jobs_passes_filters_and_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    jobs = [
        _status("j1", "succeeded", model_id="m1"),
        _status(
            "j2",
            "queued",
            waiting_reason="no live worker serves runtime pytorch-2.1",
            runtime="pytorch-2.1",
        ),
    ]
    api = Recorder({("GET", "/jobs"): {"jobs": jobs, "next_cursor": None}})
    assert (
        _run(
            api,
            "jobs",
            "--state",
            "queued",
            "--runtime",
            "sklearn",
            "--type",
            "training",
            "--limit",
            "5",
        )
        == 0
    )
    params = api.requests[0].url.params
    assert (params["state"], params["runtime"], params["job_type"], params["limit"]) == (
        "queued",
        "sklearn",
        "training",
        "5",
    )
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "JOB",
        "ID",
        "TYPE",
        "RUNTIME",
        "STATUS",
        "ATTEMPT",
        "CREATED",
        "MODEL",
        "NOTE",
    ]
    assert first.index("succeeded") == header.index("STATUS") == second.index("queued")
    assert "no live worker" in second


def test_json_prints_the_api_answer(capsys: pytest.CaptureFixture[str]) -> None:
    models = [{"model_id": "m1", "model_type": "svm", "metrics": {"accuracy": 0.9}}]
    api = Recorder({("GET", "/models"): {"models": models}})
    assert _run(api, "--json", "models") == 0
    assert json.loads(capsys.readouterr().out) == {"models": models}


def test_models_workers_queues_and_model_render(capsys: pytest.CaptureFixture[str]) -> None:
    api = Recorder(
        {
            ("GET", "/models"): {"models": []},
            ("GET", "/models/m1"): {
                "model_id": "m1",
                "model_type": "svm",
                "runtime": "sklearn",
                "metrics": {"accuracy": 0.9},
                "size_bytes": 2048,
                "label_names": ["a", "b"],
            },
            ("GET", "/workers"): {
                "workers": [
                    {
                        "worker_id": "w1",
                        "runtime": "sklearn",
                        "framework": "sklearn",
                        "framework_version": "1.9.1",
                        "device": "cpu",
                        "host": "h",
                        "pid": 7,
                        "state": "idle",
                        "loaded_models": ["m1"],
                    }
                ]
            },
            ("GET", "/queues"): {
                "queues": {
                    "sklearn": {"high": 1, "normal": 2, "low": 0, "total": 3, "live_workers": 1}
                },
                "jobs_by_state": {"queued": 3},
            },
        }
    )
    assert _run(api, "models") == 0
    assert capsys.readouterr().out == "no models\n"
    assert _run(api, "model", "m1") == 0
    out = capsys.readouterr().out
    assert "accuracy=0.9" in out and "2.0 KiB" in out and "labels:" in out
    assert _run(api, "workers") == 0
    out = capsys.readouterr().out
    assert "sklearn 1.9.1" in out and "w1" in out and "idle" in out
    assert _run(api, "queues") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == ["sklearn", "1", "2", "0", "3", "1"]
    assert "queued=3" in out


def test_cancel_reports_what_happened(capsys: pytest.CaptureFixture[str]) -> None:
    api = Recorder({("POST", "/jobs/j1/cancel"): _status("j1", "running", cancel_requested=True)})
    assert _run(api, "cancel", "j1") == 0
    assert "cancel requested" in capsys.readouterr().out


# -- errors ----------------------------------------------------------------------------


def test_an_api_refusal_prints_its_message_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    message = "model_type: unknown model_type 'nope'; known: random_forest, svm"
    api = Recorder({("POST", "/jobs/training"): _error(422, message, "model_type")})
    assert _run(api, "submit", "training", "--model-type", "nope", "--data-path", "/d") == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {message}" and captured.out == ""


def test_cancelling_an_ended_job_is_exit_2_with_the_conflict(
    capsys: pytest.CaptureFixture[str],
) -> None:
    message = "job 'j1' already ended: it is succeeded"
    api = Recorder({("POST", "/jobs/j1/cancel"): _error(409, message, "job_id")})
    assert _run(api, "cancel", "j1") == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_a_non_json_error_answer_is_still_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    api = Recorder({("GET", "/workers"): httpx.Response(502, text="Bad Gateway")})
    assert _run(api, "workers") == 2
    assert "error: Bad Gateway" in capsys.readouterr().err


def test_an_unreachable_backend_says_how_to_start_it(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    assert _run(refuse, "workers") == 2
    err = capsys.readouterr().err
    assert f"not reachable at {URL}" in err and "./scripts/run_local.sh" in err


def test_an_unreachable_backend_for_real_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from trainyard.embedded import free_port

    assert main(["--url", f"http://127.0.0.1:{free_port()}", "models"]) == 2
    assert "not reachable" in capsys.readouterr().err


# -- rendering units -------------------------------------------------------------------


def test_table_aligns_columns_and_renders_missing_values() -> None:
    text = cli_render.table(["A", "LONG NAME", "C"], [["x", None, 1.5], ["longer", "y", True]])
    assert text.splitlines() == [
        "A       LONG NAME  C",
        "x       -          1.5",
        "longer  y          yes",
    ]
    assert cli_render.table(["A"], [], empty="nothing") == "nothing"
    assert cli_render.table(["A"], []) == "A"


def test_cell_keeps_one_line_and_cuts_long_text() -> None:
    assert cli_render.cell("a\nb   c") == "a b c"
    assert cli_render.cell("x" * 10, 5) == "xxxx…"
    assert cli_render.cell({"k": [1, 2]}) == '{"k":[1,2]}'
    assert cli_render.cell(0) == "0" and cli_render.cell(False) == "no"


def test_progress_bar_and_text() -> None:
    assert cli_render.bar(0.5, 10) == "[#####.....]"
    assert cli_render.bar(2.0, 4) == "[####]"
    assert cli_render.progress_fraction({"step": 25, "steps": 100, "epoch": 0}) == 0.25
    assert cli_render.progress_fraction({"epoch": 1, "epochs": 4}) == 0.25
    assert cli_render.progress_fraction({"message": "x"}) is None
    assert cli_render.progress_fraction(None) is None
    text = cli_render.progress_text(
        {
            "epoch": 2,
            "epochs": 5,
            "step": 3,
            "steps": 10,
            "loss": 0.123456,
            "eta_s": 75,
            "message": "fitting",
        }
    )
    assert text == "epoch 2/5  step 3/10  loss 0.1235  eta 1m15s  fitting"
    line = cli_render.progress_line("running", {"epoch": 1, "epochs": 2}, 3.0)
    assert line.startswith("running    [##########..........]  50%") and line.endswith("(3.0s)")


def test_status_block_shows_result_keys_and_leaves_out_empty_fields() -> None:
    block = cli_render.status_block(
        _status(
            "j1",
            "succeeded",
            model_id="m1",
            result={"model_id": "m1", "prediction": "a", "metrics": {"accuracy": 1.0}},
            error=None,
        )
    )
    keys = [line.split(":")[0] for line in block.splitlines()]
    assert keys == ["job", "status", "type", "runtime", "attempt", "model", "metrics", "prediction"]
    assert "prediction: a" in block.replace("  ", " ").replace("  ", " ")


def test_size_duration_and_time_helpers() -> None:
    assert cli_render.size_text(512) == "512 B"
    assert cli_render.size_text(3 * 1024 * 1024) == "3.0 MiB"
    assert cli_render.size_text(None) is None
    assert cli_render.duration_text(4.25) == "4.2s"
    assert cli_render.duration_text(3725) == "1h02m"
    assert cli_render.short_time("garbage") is None
    assert cli_render.time_of_id("0-1") == "1970-01-01T00:00:00+00:00"
    assert cli_render.time_of_id("x") is None
