"""Monitoring: Prometheus scrapes every role's admin port, alert rules cover consumer
lag, rejected readings and error rates, the dashboard shows the main figures, and all
of them use only metrics the binary exports (docs/interfaces.md)."""

import json

from deploycheck import monitoring, policy, tree

RULES = "infrastructure/monitoring/base/rules/reporting.rules.yml"
DASHBOARD = "infrastructure/monitoring/base/dashboards/reporting.json"


def check(broken):
    return monitoring.check(broken.root, tree.applied_everywhere(broken.root))


def test_monitoring_holds(root, applied):
    assert monitoring.check(root, applied) == []


def test_metric_names_come_from_the_interfaces_document(root):
    assert monitoring.FALLBACK_METRICS <= monitoring.known_metrics(root)


def test_every_reporting_pod_exposes_the_port_prometheus_keeps(applied):
    for item, spec in policy.workloads(applied):
        if item.obj["metadata"].get("namespace") == "reporting":
            for container in spec["containers"]:
                assert {"name": "admin", "containerPort": 9464} in container["ports"], item.ref


def test_dashboard_is_grafana_json_with_panels(root):
    dashboard = json.loads((root / DASHBOARD).read_text())
    assert dashboard["uid"] == "reporting-overview"
    assert len([p for p in dashboard["panels"] if p["type"] != "row"]) >= 10


def test_alert_on_a_metric_the_binary_does_not_export_fails(broken):
    broken.edit(RULES, "sum by (namespace) (reporting_aggregator_consumer_lag) > 100000",
                "sum by (namespace) (reporting_aggregator_lag) > 100000")
    assert any("reporting_aggregator_lag is not a metric the binary exports" in p for p in check(broken))


def test_missing_error_rate_alert_fails(broken):
    broken.edit(RULES, 'reporting_http_requests_total{status=~"5.."}', 'reporting_http_requests_total{status="500"}')
    assert any("no alert rule on HTTP error rate" in p for p in check(broken))


def test_alert_without_for_fails(broken):
    broken.edit(RULES, "        for: 15m\n", "")
    assert any("alert ReportingReadingsRejectedRateHigh: no `for`" in p for p in check(broken))


def test_unbalanced_alert_expression_fails(broken):
    broken.edit(RULES, "expr: up{job=\"reporting\"} == 0", "expr: up{job=\"reporting\" == 0")
    assert any("alert ReportingTargetDown: unbalanced" in p for p in check(broken))


def test_dashboard_panel_on_an_unknown_datasource_fails(broken):
    text = (broken.root / DASHBOARD).read_text()
    broken.write(DASHBOARD, text.replace('"uid": "prometheus"', '"uid": "prom"'))
    assert any("datasource uid 'prom' is not provisioned" in p for p in check(broken))


def test_scraping_without_the_admin_port_filter_fails(broken):
    broken.edit("infrastructure/monitoring/base/prometheus/prometheus.yml", "        regex: admin\n", "        regex: http\n")
    assert any("keeps their `admin` port" in p for p in check(broken))
