"""The routing table: the seed's model types go to the runtimes its README names, and a
job no runtime could run is refused with the request field at fault."""

from __future__ import annotations

import pytest

from trainyard.routing import (
    MODEL_TYPES,
    RUNTIMES,
    RouteError,
    can_load,
    check_base_model,
    route_training,
    routing_table,
)


@pytest.mark.parametrize(
    ("model_type", "requires_gpu", "runtime"),
    [
        ("bert", False, "pytorch-2.1"),
        ("transformer", False, "pytorch-2.1"),
        ("bert", True, "pytorch-2.1-gpu"),
        ("resnet", False, "pytorch-2.0"),
        ("vgg", False, "pytorch-2.0"),
        ("resnet", True, "pytorch-2.0-gpu"),
        ("vgg", True, "pytorch-2.0-gpu"),
        ("inception", False, "tensorflow"),
        ("mobilenet", False, "tensorflow"),
        ("random_forest", False, "sklearn"),
        ("svm", False, "sklearn"),
    ],
)
def test_default_route_follows_the_seed_table(
    model_type: str, requires_gpu: bool, runtime: str
) -> None:
    assert route_training(model_type, requires_gpu, None) == runtime


@pytest.mark.parametrize(
    ("model_type", "requires_gpu", "override"),
    [
        ("bert", False, "pytorch-2.1"),  # the seed's examples, verbatim
        ("resnet", True, "pytorch-2.0-gpu"),
        ("inception", False, "tensorflow"),
        ("random_forest", False, "sklearn"),
        ("bert", False, "pytorch-2.0"),  # another runtime of the same framework
        ("resnet", False, "pytorch-2.1-gpu"),  # a GPU runtime without requiring one
    ],
)
def test_framework_override_picks_the_runtime(
    model_type: str, requires_gpu: bool, override: str
) -> None:
    assert route_training(model_type, requires_gpu, override) == override


@pytest.mark.parametrize(
    ("model_type", "requires_gpu", "override", "field"),
    [
        ("gpt", False, None, "model_type"),
        ("", False, "sklearn", "model_type"),
        ("bert", False, "pytorch-3.0", "framework_override"),
        ("svm", False, "scikit-learn", "framework_override"),
        ("bert", False, "tensorflow", "framework_override"),
        ("random_forest", False, "pytorch-2.0", "framework_override"),
        ("inception", False, "sklearn", "framework_override"),
        ("resnet", True, "pytorch-2.0", "requires_gpu"),
        ("bert", True, "pytorch-2.1", "requires_gpu"),
        ("inception", True, None, "requires_gpu"),
        ("random_forest", True, None, "requires_gpu"),
        ("svm", True, "sklearn", "requires_gpu"),
    ],
)
def test_unroutable_jobs_are_refused_naming_the_field(
    model_type: str, requires_gpu: bool, override: str | None, field: str
) -> None:
    with pytest.raises(RouteError) as caught:
        route_training(model_type, requires_gpu, override)
    assert caught.value.field == field
    assert caught.value.message and str(caught.value) == caught.value.message


def test_unknown_model_type_error_lists_the_known_ones() -> None:
    with pytest.raises(RouteError) as caught:
        route_training("gpt", False, None)
    assert all(name in caught.value.message for name in MODEL_TYPES)


def test_every_default_runtime_exists_and_matches_its_framework_and_device() -> None:
    for route in MODEL_TYPES.values():
        cpu = RUNTIMES[route.cpu_runtime]
        assert (cpu.framework, cpu.device) == (route.framework, "cpu")
        if route.gpu_runtime is not None:
            gpu = RUNTIMES[route.gpu_runtime]
            assert (gpu.framework, gpu.device) == (route.framework, "gpu")


def test_routing_table_is_json_ready_data() -> None:
    table = routing_table()
    assert [r["name"] for r in table["runtimes"]] == list(RUNTIMES)
    assert {m["model_type"] for m in table["model_types"]} == set(MODEL_TYPES)
    assert all(isinstance(r["extra"], str) for r in table["runtimes"])


def test_a_model_loads_only_on_its_framework_version() -> None:
    assert can_load("pytorch-2.0", "pytorch-2.0-gpu") and can_load("pytorch-2.1-gpu", "pytorch-2.1")
    assert not can_load("pytorch-2.0", "pytorch-2.1")
    assert not can_load("tensorflow", "pytorch-2.1") and not can_load("nope", "sklearn")


def test_fine_tuning_follows_the_base_model_unless_overridden() -> None:
    # bert defaults to pytorch-2.1; a base model trained on 2.0 keeps the job on 2.0.
    assert route_training("bert", False, None, base_runtime="pytorch-2.0") == "pytorch-2.0"
    assert route_training("bert", True, None, base_runtime="pytorch-2.0") == "pytorch-2.0-gpu"
    assert route_training("resnet", False, None, base_runtime="pytorch-2.0-gpu") == "pytorch-2.0"
    with pytest.raises(RouteError) as err:
        route_training("inception", True, None, base_runtime="tensorflow")
    assert err.value.field == "requires_gpu"


def test_a_base_model_of_another_type_or_version_is_refused() -> None:
    base = {"model_id": "b1", "model_type": "bert", "runtime": "pytorch-2.0"}
    check_base_model("bert", "pytorch-2.0-gpu", base)
    with pytest.raises(RouteError, match="is a bert model; this job trains a resnet"):
        check_base_model("resnet", "pytorch-2.0", base)
    with pytest.raises(RouteError, match=r"set framework_override to 'pytorch-2\.0'") as err:
        check_base_model("bert", "pytorch-2.1", base)
    assert err.value.field == "base_model_id"


def test_scikit_learn_models_are_not_fine_tuned() -> None:
    base = {"model_id": "rf", "model_type": "random_forest", "runtime": "sklearn"}
    with pytest.raises(RouteError, match="cannot be fine-tuned") as err:
        check_base_model("random_forest", "sklearn", base)
    assert err.value.field == "base_model_id"
