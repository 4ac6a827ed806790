"""The ``trainyard`` command line: parsing its arguments, and the bodies it sends to a
scripted API (httpx.MockTransport through the client, see ``api_replies``). The commands'
output and exit codes are tested in test_cli_commands.py; the real system is driven in
tests/e2e/test_cli.py."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_replies import Recorder
from api_replies import attempt_status_reply as _status
from api_replies import run_cli as _run

from trainyard import cli
from trainyard.cli import build_parser, parse_key_value

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


def test_up_starts_a_worker_per_flag_even_for_the_same_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trainyard import up

    started: list[up.UpConfig] = []
    monkeypatch.setattr(up, "run_up", lambda cfg: started.append(cfg) or 0)
    flags = ["--worker", "sklearn=/a/python", "--worker", "sklearn=/b/python"]
    args = build_parser().parse_args(["up", *flags, "--worker", "pytorch-2.1=/c/python"])
    assert args.func(args) == 0
    assert started[0].workers == [
        ("sklearn", Path("/a/python")),
        ("sklearn", Path("/b/python")),
        ("pytorch-2.1", Path("/c/python")),
    ]
