"""Prometheus scrape configuration, alert rules and the Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from . import tree
from .tree import Applied

MONITORING_NAMESPACE = "monitoring"
METRIC = re.compile(r"\b(reporting_[a-z0-9_]+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Used when docs/interfaces.md is not there to read them from.
FALLBACK_METRICS = {
    "reporting_ingest_readings_accepted_total", "reporting_ingest_readings_rejected_total",
    "reporting_ingest_requests_rejected_total", "reporting_bus_publish_seconds",
    "reporting_aggregator_consumer_lag", "reporting_aggregator_flush_batch_readings",
    "reporting_aggregator_flush_seconds", "reporting_aggregator_readings_applied_total",
    "reporting_aggregator_fenced_batches_total", "reporting_http_requests_total",
}
# What the alert rules must cover (issue 3): consumer lag, rejected readings, 5xx rates.
REQUIRED_ALERT_EXPRESSIONS = {
    "consumer lag": re.compile(r"reporting_aggregator_consumer_lag"),
    "rejected-reading rate": re.compile(r"rate\(\s*reporting_ingest_readings_rejected_total"),
    "HTTP error rate": re.compile(r'reporting_http_requests_total\{[^}]*status=~"5\.\."'),
}


def known_metrics(root: Path) -> set[str]:
    doc = root / "docs/interfaces.md"
    if not doc.is_file():
        return set(FALLBACK_METRICS)
    text = doc.read_text()
    section = text.split("## Metrics", 1)[-1].split("\n## ", 1)[0]
    return set(re.findall(r"`(reporting_[a-z0-9_]+)", section)) or set(FALLBACK_METRICS)


def unknown_metrics(expr: str, metrics: set[str]) -> list[str]:
    unknown = []
    for name in METRIC.findall(expr):
        base = name
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in metrics:
                base = name[: -len(suffix)]
        if base not in metrics:
            unknown.append(name)
    return unknown


def balanced(expr: str) -> bool:
    pairs, stack, quoted = {")": "(", "]": "[", "}": "{"}, [], None
    for char in expr:
        if quoted:
            quoted = None if char == quoted else quoted
        elif char in "\"'":
            quoted = char
        elif char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                return False
    return not stack and quoted is None


def _configmap(items: list[Applied], prefix: str, key: str):
    for item in items:
        if item.obj.get("kind") == "ConfigMap" and (item.obj.get("metadata") or {}).get("name", "").startswith(prefix):
            data = item.obj.get("data") or {}
            if key in data:
                return item, data[key]
    return None, None


def rule_problems(text: str, metrics: set[str]) -> list[str]:
    problems = []
    rules = [rule for group in (yaml.safe_load(text) or {}).get("groups") or [] for rule in group.get("rules") or []]
    alerts = [r for r in rules if "alert" in r]
    for rule in alerts:
        name = rule.get("alert")
        expr = str(rule.get("expr", ""))
        if not expr.strip():
            problems.append(f"alert {name}: no expr")
        if not balanced(expr):
            problems.append(f"alert {name}: unbalanced brackets or quotes in expr")
        for metric in unknown_metrics(expr, metrics):
            problems.append(f"alert {name}: {metric} is not a metric the binary exports")
        if not rule.get("for"):
            problems.append(f"alert {name}: no `for` (fires on a single bad scrape)")
        if not (rule.get("labels") or {}).get("severity"):
            problems.append(f"alert {name}: no severity label")
        if not (rule.get("annotations") or {}).get("summary"):
            problems.append(f"alert {name}: no summary annotation")
    for what, pattern in REQUIRED_ALERT_EXPRESSIONS.items():
        if not any(pattern.search(str(r.get("expr", ""))) for r in alerts):
            problems.append(f"no alert rule on {what}")
    return problems


def dashboard_problems(text: str, metrics: set[str], datasource_uids: set[str]) -> list[str]:
    problems = []
    try:
        dashboard = json.loads(text)
    except ValueError as error:
        return [f"dashboard is not JSON: {error}"]
    if not dashboard.get("uid") or not dashboard.get("title"):
        problems.append("dashboard needs a uid and a title")
    panels = [p for p in dashboard.get("panels") or [] if p.get("type") != "row"]
    if not panels:
        problems.append("dashboard has no panels")
    covered = set()
    for panel in panels:
        uid = (panel.get("datasource") or {}).get("uid")
        if uid not in datasource_uids:
            problems.append(f"panel {panel.get('title')!r}: datasource uid {uid!r} is not provisioned")
        for target in panel.get("targets") or []:
            expr = str(target.get("expr", ""))
            if not balanced(expr):
                problems.append(f"panel {panel.get('title')!r}: unbalanced expr")
            for metric in unknown_metrics(expr, metrics):
                problems.append(f"panel {panel.get('title')!r}: {metric} is not a metric the binary exports")
            covered.update(METRIC.findall(expr))
    for metric in ("reporting_ingest_readings_accepted_total", "reporting_ingest_readings_rejected_total",
                   "reporting_aggregator_consumer_lag", "reporting_http_requests_total"):
        if metric not in covered:
            problems.append(f"dashboard does not show {metric}")
    return problems


def scrape_problems(text: str) -> list[str]:
    config = yaml.safe_load(text) or {}
    for job in config.get("scrape_configs") or []:
        pods = [sd for sd in job.get("kubernetes_sd_configs") or [] if sd.get("role") == "pod"
                and "reporting" in ((sd.get("namespaces") or {}).get("names") or [])]
        keeps_admin = any(r.get("action") == "keep" and "__meta_kubernetes_pod_container_port_name"
                          in (r.get("source_labels") or []) and r.get("regex") == "admin"
                          for r in job.get("relabel_configs") or [])
        if pods and keeps_admin and job.get("metrics_path", "/metrics") == "/metrics":
            return []
    return ["no scrape job discovers pods in namespace reporting and keeps their `admin` port's /metrics"]


def check(root: Path, items: list[Applied]) -> list[str]:
    metrics = known_metrics(root)
    problems = []
    for env in tree.ENVIRONMENTS:
        here = [i for i in items if i.env == env and (i.obj.get("metadata") or {}).get("namespace") == MONITORING_NAMESPACE]
        item, text = _configmap(here, "prometheus-config", "prometheus.yml")
        if text is None:
            problems.append(f"{env}: no prometheus-config ConfigMap")
        else:
            problems += [f"{item.ref}: {p}" for p in scrape_problems(text)]
        item, text = _configmap(here, "prometheus-rules", "reporting.rules.yml")
        if text is None:
            problems.append(f"{env}: no prometheus-rules ConfigMap with reporting.rules.yml")
        else:
            problems += [f"{item.ref}: {p}" for p in rule_problems(text, metrics)]
        _, datasources = _configmap(here, "grafana-provisioning", "datasources.yaml")
        uids = {d.get("uid") for d in (yaml.safe_load(datasources or "") or {}).get("datasources") or []}
        item, text = _configmap(here, "grafana-dashboards", "reporting.json")
        if text is None:
            problems.append(f"{env}: no grafana-dashboards ConfigMap with reporting.json")
        else:
            problems += [f"{item.ref}: {p}" for p in dashboard_problems(text, metrics, uids)]
    return problems
