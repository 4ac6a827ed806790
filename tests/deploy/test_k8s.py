"""Static checks of the Kubernetes and KEDA manifests in deploy/k8s."""

from __future__ import annotations

import ast
import re
from typing import Any

import pytest
import yaml
from deploy_helpers import EXTRAS, KNOWN_VARS, REPO
from deploy_helpers import grace_needed as _grace_needed

from trainyard.routing import RUNTIMES

K8S = REPO / "deploy" / "k8s"


def _metrics_gauges() -> dict[str, set[str]]:
    """Gauge name -> label names, from the backend's metrics route."""
    tree = ast.parse((REPO / "backend/src/trainyard_api/routes/metrics.py").read_text())
    assigned = {
        n.targets[0].id: n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
    }
    gauges: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "_family"
        ):
            continue
        name = ast.literal_eval(node.args[0])
        labels: set[str] = set()
        samples = node.args[2]
        if isinstance(samples, ast.Name):  # samples built beforehand: depth_samples = [...]
            samples = assigned[samples.id]
        for dict_node in ast.walk(samples):
            if isinstance(dict_node, ast.Dict):
                labels.update(
                    key.value
                    for key in dict_node.keys
                    if isinstance(key, ast.Constant) and isinstance(key.value, str)
                )
        gauges[name] = labels
    assert gauges, "no gauge families found in the metrics route"
    return gauges


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict), path
            doc["__file__"] = path.name
            docs.append(doc)
    return docs


def _of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_k8s_documents_are_well_formed(k8s_docs: list[dict[str, Any]]) -> None:
    for doc in k8s_docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc["__file__"]
        assert doc.get("metadata", {}).get("name"), doc["__file__"]


def test_k8s_kustomization_lists_the_manifests(k8s_docs: list[dict[str, Any]]) -> None:
    kustomization = next(d for d in k8s_docs if d["kind"] == "Kustomization")
    listed = set(kustomization["resources"])
    for name in listed:
        assert (K8S / name).is_file(), name
    optional = {"kustomization.yaml", "sample-data-job.yaml"}
    assert {p.name for p in K8S.glob("*.yaml")} - optional == listed


def test_k8s_ships_no_redis(k8s_docs: list[dict[str, Any]]) -> None:
    for doc in k8s_docs:
        for container in _containers(doc):
            image = container["image"].split("/")[-1]
            assert not image.startswith(("redis", "valkey")), "point REDIS_URL at a managed Redis"


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", []))


def test_k8s_references_resolve(k8s_docs: list[dict[str, Any]]) -> None:
    configmaps = _of_kind(k8s_docs, "ConfigMap")
    claims = _of_kind(k8s_docs, "PersistentVolumeClaim")
    for doc in k8s_docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= pod["metadata"]["labels"].items()
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        for container in _containers(doc):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{doc['metadata']['name']}: {mount['name']}"
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps
            names = {e["name"] for e in container.get("env", [])}
            assert not names - KNOWN_VARS, f"unknown env {sorted(names - KNOWN_VARS)}"
    for name, cm in configmaps.items():
        unknown = set(cm["data"]) - KNOWN_VARS
        assert not unknown, f"ConfigMap {name}: not a setting: {sorted(unknown)}"
    assert claims["trainyard-models"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_k8s_backend_service_and_probes(k8s_docs: list[dict[str, Any]]) -> None:
    deployment = _of_kind(k8s_docs, "Deployment")["trainyard-backend"]
    service = _of_kind(k8s_docs, "Service")["trainyard-backend"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["type"] == "ClusterIP"
    (container,) = _containers(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health" and get["port"] in ports


def test_k8s_worker_grace_and_model_store(k8s_docs: list[dict[str, Any]]) -> None:
    deployment = _of_kind(k8s_docs, "Deployment")["trainyard-worker-sklearn"]
    config = _of_kind(k8s_docs, "ConfigMap")["trainyard-config"]["data"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > _grace_needed(config)
    (container,) = _containers(deployment)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WORKER_TYPE"] == "sklearn" and RUNTIMES["sklearn"].extra in EXTRAS
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/data"].get("readOnly") is True
    assert config["MODEL_STORE"] in mounts and config["DATA_ROOT"] in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    models = volumes[mounts[config["MODEL_STORE"]]["name"]]
    assert models["persistentVolumeClaim"]["claimName"] == "trainyard-models"


def test_keda_query_names_a_gauge_the_backend_emits(k8s_docs: list[dict[str, Any]]) -> None:
    gauges = _metrics_gauges()
    deployments = _of_kind(k8s_docs, "Deployment")
    scaled = _of_kind(k8s_docs, "ScaledObject")
    assert scaled
    for name, obj in scaled.items():
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        target = obj["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, f"{name}: no Deployment {target}"
        (container,) = _containers(deployments[target])
        runtime = {e["name"]: e["value"] for e in container["env"]}["WORKER_TYPE"]
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "prometheus"
        meta = trigger["metadata"]
        assert meta["serverAddress"].startswith("http")
        float(meta["threshold"])
        query = meta["query"]
        selectors = re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", query)
        assert selectors, query
        for metric, matchers in selectors:
            assert metric in gauges, f"{metric} is not emitted by /metrics ({sorted(gauges)})"
            labels = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', matchers))
            assert set(labels) <= gauges[metric], f"{metric} has no label {set(labels)}"
            assert labels.get("runtime") == runtime, f"{name}: query is not for {runtime}"
        for label in re.findall(r"by\s*\(([^)]*)\)", query):
            assert {x.strip() for x in label.split(",")} <= gauges[selectors[0][0]]
