"""The ``trainyard`` commands against a scripted API (httpx.MockTransport through the
client, see ``api_replies``): following a job, what each command prints, exit codes and
errors, and the rendering units. Parsing and the bodies sent are tested in
test_cli_parsing.py; the real system is driven in tests/e2e/test_cli.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from api_replies import URL, Recorder
from api_replies import attempt_status_reply as _status
from api_replies import error_reply as _error
from api_replies import run_cli as _run

from trainyard import cli_render
from trainyard.cli import main


def _sse(*events: tuple[str, dict[str, Any]]) -> str:
    return "".join(
        f"id: {i + 1}-0\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
        for i, (kind, data) in enumerate(events)
    )


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


def test_dead_letters_lists_dead_jobs_with_their_error(capsys: pytest.CaptureFixture[str]) -> None:
    dead = _status("j9", "dead", attempt=3, max_attempts=3, error="worker lost", error_kind="lost")
    api = Recorder({("GET", "/dead-letters"): {"jobs": [dead], "next_cursor": None}})
    assert _run(api, "dead-letters", "--runtime", "sklearn", "--not-redriven") == 0
    out = capsys.readouterr().out
    assert "j9" in out and "dead" in out and "3/3" in out
    params = api.requests[0].url.params
    assert params["runtime"] == "sklearn" and params["redriven"] == "false"


def test_redrive_one_job_or_all_matching(capsys: pytest.CaptureFixture[str]) -> None:
    api = Recorder(
        {
            ("POST", "/jobs/j9/redrive"): _status("n1", "queued", redriven_from="j9"),
            ("POST", "/dead-letters/redrive"): {
                "redriven": [{"job_id": "j9", "new_job_id": "n1"}],
                "more": True,
            },
        }
    )
    assert _run(api, "redrive", "j9") == 0
    assert "job j9 redriven as job n1" in capsys.readouterr().out
    assert _run(api, "redrive", "--all", "--error-kind", "lost", "--limit", "5") == 0
    assert api.body(1) == {"error_kind": "lost", "limit": 5}
    out = capsys.readouterr().out
    assert "1 dead job redriven (more are left: run it again)" in out
    assert _run(api, "redrive", "j9", "--runtime", "sklearn") == 2
    assert "go with --all" in capsys.readouterr().err


def test_redrive_of_a_job_that_is_not_dead_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    message = "job 'j1' is queued, not dead: only dead jobs are redriven"
    api = Recorder({("POST", "/jobs/j1/redrive"): _error(409, message, "job_id")})
    assert _run(api, "redrive", "j1") == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


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
