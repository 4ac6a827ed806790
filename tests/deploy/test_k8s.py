"""Static checks of the Kubernetes and KEDA manifests in deploy/k8s."""

from __future__ import annotations

import ast
import re
from typing import Any

import pytest
import yaml
from deploy_helpers import EXTRAS, KNOWN_VARS, REPO, SETTINGS, k8s_name
from deploy_helpers import grace_needed as _grace_needed
from exposition import backend_families

from trainyard.keys import KeySchema
from trainyard.routing import RUNTIMES

K8S = REPO / "deploy" / "k8s"


def _metrics_gauges() -> dict[str, set[str]]:
    """Gauge name -> label names, from the backend's GET /metrics, rendered (exposition)."""
    gauges = {name: f.labels for name, f in backend_families().items() if f.type == "gauge"}
    assert gauges, "no gauge families in the backend's /metrics"
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
    # Prometheus (annotation-based discovery) scrapes /metrics on the API's port.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports["http"])
    assert annotations["prometheus.io/path"] == "/metrics"


def test_k8s_backend_requires_api_keys_from_a_secret(k8s_docs: list[dict[str, Any]]) -> None:
    """Production: keys on, read from a mounted Secret; /health (the probes) stays open."""
    deployment = _of_kind(k8s_docs, "Deployment")["trainyard-backend"]
    (container,) = _containers(deployment)
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["REQUIRE_API_KEYS"] == "true"
    keys_file = env["API_KEYS_FILE"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = [m for m in container["volumeMounts"] if keys_file.startswith(m["mountPath"] + "/")]
    assert len(mounts) == 1 and mounts[0]["readOnly"] is True
    secret = volumes[mounts[0]["name"]]["secret"]
    assert secret["secretName"] == "trainyard-api-keys"
    assert keys_file.rsplit("/", 1)[1] == "keys"  # the Secret's key DEPLOYMENT.md creates
    docs = (REPO / "docs/DEPLOYMENT.md").read_text()
    assert "kubectl -n trainyard create secret generic trainyard-api-keys" in docs


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_k8s_every_runtime_has_a_worker_deployment(
    k8s_docs: list[dict[str, Any]], runtime: str
) -> None:
    spec = RUNTIMES[runtime]
    name = k8s_name(runtime)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    deployments = _of_kind(k8s_docs, "Deployment")
    assert name in deployments, f"no Deployment {name} for runtime {runtime}"
    deployment = deployments[name]
    assert deployment["__file__"] == f"worker-{runtime}.yaml"
    assert deployment["metadata"]["labels"]["trainyard.io/runtime"] == runtime
    # KEDA owns the replica count; a replicas field would reset it on every apply.
    assert "replicas" not in deployment["spec"]
    config = _of_kind(k8s_docs, "ConfigMap")["trainyard-config"]["data"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > _grace_needed(config)
    (container,) = _containers(deployment)
    assert container["image"].split(":")[0] == f"trainyard-worker-{runtime}"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WORKER_TYPE"] == runtime and spec.extra in EXTRAS
    assert env["MODEL_FRAMEWORK"] == spec.framework
    assert env["USE_GPU"] == ("true" if spec.device == "gpu" else "false")
    assert int(env["JOB_THREADS"]) >= 1
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/data"].get("readOnly") is True
    assert config["MODEL_STORE"] in mounts and config["DATA_ROOT"] in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    models = volumes[mounts[config["MODEL_STORE"]]["name"]]
    assert models["persistentVolumeClaim"]["claimName"] == "trainyard-models"
    limits = container["resources"]["limits"]
    if spec.device == "gpu":
        assert limits["nvidia.com/gpu"] == 1, "a GPU worker takes one whole GPU"
        tolerations = pod.get("tolerations", [])
        assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations)
    else:
        assert "nvidia.com/gpu" not in limits and "nvidia.com/gpu" not in str(pod)


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_k8s_workers_serve_their_metrics_port(
    k8s_docs: list[dict[str, Any]], runtime: str
) -> None:
    """The worker's metrics port is off by default; the manifests turn it on, on every
    interface (Prometheus scrapes from another pod), name it, and annotate the pod."""
    assert SETTINGS["METRICS_PORT"][1] == 0, "off unless asked for"
    deployment = _of_kind(k8s_docs, "Deployment")[k8s_name(runtime)]
    (container,) = _containers(deployment)
    env = {e["name"]: e["value"] for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(env["METRICS_PORT"]) == ports["metrics"] > 0
    assert env["METRICS_HOST"] == "0.0.0.0"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_k8s_every_runtime_has_a_scaled_object(
    k8s_docs: list[dict[str, Any]], runtime: str
) -> None:
    scaled = {
        obj["spec"]["scaleTargetRef"]["name"]: obj
        for obj in _of_kind(k8s_docs, "ScaledObject").values()
    }
    name = k8s_name(runtime)
    assert name in scaled, f"no ScaledObject scales {name}"
    obj = scaled[name]
    assert obj["__file__"] == f"keda-worker-{runtime}.yaml"
    spec = obj["spec"]
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    query = trigger["metadata"]["query"]
    # Waiting plus running jobs of this runtime, so scale-in never counts a busy pod idle.
    assert f'trainyard_queue_depth{{runtime="{runtime}"}}' in query
    assert f'trainyard_running_jobs{{runtime="{runtime}"}}' in query


def test_k8s_one_worker_always_runs(k8s_docs: list[dict[str, Any]]) -> None:
    """Expired leases are recovered and due retries requeued by workers only (any runtime,
    for all runtimes): with every runtime scaled to zero, nobody would."""
    always = [
        obj["spec"]["scaleTargetRef"]["name"]
        for obj in _of_kind(k8s_docs, "ScaledObject").values()
        if obj["spec"]["minReplicaCount"] >= 1
    ]
    assert k8s_name("sklearn") in always
    worker = REPO / "ai-worker/src/trainyard_worker"
    assert ".reap(" in (worker / "registration.py").read_text()
    claim = (REPO / "core/src/trainyard/lua/claim.lua").read_text()
    assert "K.delayed" in claim


def test_keda_metrics_follow_the_key_schema() -> None:
    """The gauges KEDA reads have one series per runtime of the routing table, counted from
    the runtime's own keys (ready:<runtime>, index:runtime:<runtime>)."""
    source = (REPO / "core/src/trainyard/engine_reads.py").read_text()
    tree = ast.parse(source)
    functions = {
        n.name: ast.get_source_segment(source, n)
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef)
    }
    depths, running = functions["queue_depths"] or "", functions["running_by_runtime"] or ""
    assert "list(RUNTIMES)" in depths and "self.keys.ready(" in depths
    assert "list(RUNTIMES)" in running and "self.keys.index_runtime(" in running
    keys = KeySchema()
    for runtime in RUNTIMES:
        assert keys.ready(runtime) == f"{keys.prefix}ready:{runtime}"
        assert keys.index_runtime(runtime) == f"{keys.prefix}index:runtime:{runtime}"


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
        assert runtime in RUNTIMES
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
