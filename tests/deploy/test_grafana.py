"""The Grafana dashboard (deploy/grafana/trainyard-dashboard.json) is an importable dashboard
whose every query names only metrics Trainyard exposes, with labels they have. The metric
names come from the code, rendered (see ``exposition``): the backend's ``GET /metrics`` and
the worker's metrics registry."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from deploy_helpers import REPO
from exposition import Family, backend_families, sample_names, worker_families

DASHBOARD = REPO / "deploy" / "grafana" / "trainyard-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Labels Prometheus adds to every scraped series (target labels), and histogram buckets'.
TARGET_LABELS = {"instance", "job", "le"}
METRIC = re.compile(r"\btrainyard_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b(trainyard_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")

# The contract's metrics (the brief of issue 10): the dashboard shows every one.
BACKEND_METRICS = {
    "trainyard_queue_depth",
    "trainyard_running_jobs",
    "trainyard_jobs",
    "trainyard_live_workers",
    "trainyard_oldest_wait_seconds",
    "trainyard_queue_wait_seconds_bucket",
    "trainyard_run_seconds_bucket",
    "trainyard_inference_batch_size_bucket",
    "trainyard_jobs_finished_total",
    "trainyard_retries_total",
    "trainyard_dead_letters_total",
}
WORKER_METRICS = {
    "trainyard_worker_info",
    "trainyard_worker_jobs_total",
    "trainyard_worker_busy",
    "trainyard_worker_loaded_models",
    "trainyard_worker_gpu_memory_used_bytes",
    "trainyard_worker_gpu_memory_total_bytes",
    "trainyard_worker_gpu_utilization_ratio",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return panels


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    queries = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            queries.append((f"variable {var['name']}", query))
    return queries


def test_the_dashboard_is_importable(dashboard: dict[str, Any]) -> None:
    """What Grafana's import needs: a title and uid, the datasource as an input that every
    panel, target and variable uses (so it is picked at import), unique panel ids, grid
    positions inside the 24 columns."""
    assert dashboard["title"] and re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["id"] is None  # a new dashboard, not one exported with a database id
    assert isinstance(dashboard["schemaVersion"], int)
    (source,) = dashboard["__inputs"]
    assert source["name"] == "DS_PROMETHEUS" and source["type"] == "datasource"
    assert source["pluginId"] == "prometheus"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip()
    for var in dashboard["templating"]["list"]:
        assert var.get("datasource", DATASOURCE) == DATASOURCE
    used = {d["uid"] for d in _datasources(dashboard) if d.get("type") == "prometheus"}
    assert used == {"${DS_PROMETHEUS}"}, "only the input, never a datasource of one Grafana"


def _datasources(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = [node["datasource"]] if isinstance(node.get("datasource"), dict) else []
        return found + [d for v in node.values() for d in _datasources(v)]
    if isinstance(node, list):
        return [d for v in node for d in _datasources(v)]
    return []


def test_the_dashboard_shows_every_metric(dashboard: dict[str, Any]) -> None:
    used = {name for _, query in _queries(dashboard) for name in METRIC.findall(query)}
    assert not (BACKEND_METRICS | WORKER_METRICS) - used


def _check(queries: list[tuple[str, str]], known: dict[str, Family]) -> list[str]:
    """What is wrong with the queries: metric names ``known`` does not have, label matchers
    and groupings on labels none of the query's metrics has."""
    problems = []
    for where, query in queries:
        names = METRIC.findall(query)
        if not names:
            problems.append(f"{where}: names no trainyard metric: {query}")
        unknown = [n for n in names if n not in known]
        if unknown:
            problems.append(f"{where}: {unknown} not exposed")
            continue
        labels = set().union(*(known[n].labels for n in names)) | TARGET_LABELS
        for name, matchers in SELECTOR.findall(query):
            family = known[name]
            if family.samples:  # a family with no sample yet says nothing of its labels
                bad = set(MATCHER.findall(matchers)) - family.labels - TARGET_LABELS
                if bad:
                    problems.append(f"{where}: {name} has no label {sorted(bad)}")
        for group in GROUPING.findall(query):
            bad = {g.strip() for g in group.split(",") if g.strip()} - labels
            if bad and all(known[n].samples for n in names):
                problems.append(f"{where}: grouping by {sorted(bad)}: no such label")
    return problems


def _of(dashboard: dict[str, Any], worker: bool) -> list[tuple[str, str]]:
    return [
        (where, query)
        for where, query in _queries(dashboard)
        if any(n.startswith("trainyard_worker_") for n in METRIC.findall(query)) == worker
    ]


def test_backend_queries_name_metrics_the_backend_exposes(dashboard: dict[str, Any]) -> None:
    known = sample_names(backend_families())
    problems = _check(_of(dashboard, worker=False), known)
    assert not problems, "\n".join(problems) + f"\nexposed: {sorted(known)}"


def test_worker_queries_name_metrics_the_worker_exposes(dashboard: dict[str, Any]) -> None:
    families = worker_families()
    if families is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but TRAINYARD_WORKER_PYTHON is not set", pytrace=False)
        pytest.skip("TRAINYARD_WORKER_PYTHON is not set (scripts/test.sh sets it)")
    known = sample_names(families)
    problems = _check(_of(dashboard, worker=True), known)
    assert not problems, "\n".join(problems) + f"\nexposed: {sorted(known)}"


def test_the_check_catches_a_wrong_name_and_label() -> None:
    """The checker itself: a misspelt metric, a label the metric lacks, a bad grouping."""
    known = sample_names({"trainyard_x": Family("trainyard_x", "counter", {"runtime"}, 1)})
    assert not _check([("ok", 'sum by (runtime) (rate(trainyard_x_total{runtime="a"}[5m]))')],
                      known)  # fmt: skip
    assert _check([("name", "rate(trainyard_x[5m])")], known)  # a counter's family name
    assert _check([("label", 'trainyard_x_total{state="a"}')], known)
    assert _check([("group", "sum by (state) (trainyard_x_total)")], known)
