"""Dashboards and alert rules: structure, variables, and only metrics the exporter exports."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bpftools.metrics import METRICS

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__all", "__name__"}
PROMETHEUS_BUILTIN_METRICS = {"up"}


def panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard):
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def metric_names(expr):
    """Identifiers that name metrics in a PromQL expression (bpftools_* or known builtins)."""
    names = set(re.findall(r"\b(bpftools_[a-z_]+)\b", expr))
    names |= {n for n in PROMETHEUS_BUILTIN_METRICS if re.search(rf"\b{n}\{{", expr)}
    return names


@pytest.fixture(params=DASHBOARD_FILES, ids=lambda p: p.name)
def dashboard(request):
    return json.loads(request.param.read_text())


def test_panel_ids_are_unique(dashboard):
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_every_referenced_variable_is_defined(dashboard):
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    text = json.dumps(dashboard["panels"]) + json.dumps(dashboard["templating"])
    used = set(re.findall(r"\$\{?(\w+)", text)) - BUILTIN_VARIABLES
    assert used <= defined, used - defined


def test_datasource_is_a_variable_never_hard_coded(dashboard):
    assert any(v["type"] == "datasource" and v["name"] == "datasource" for v in dashboard["templating"]["list"])
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


def test_has_instance_netns_device_variables(dashboard):
    assert {"instance", "netns", "device"} <= {v["name"] for v in dashboard["templating"]["list"]}


def test_rates_use_rate_interval(dashboard):
    for title, expr in expressions(dashboard):
        for window in re.findall(r"(?:rate|increase)\([^\[]*\[([^\]]+)\]", expr):
            assert window in ("$__rate_interval", "$__range"), (title, expr)


def test_queries_only_exported_metrics(dashboard):
    for title, expr in expressions(dashboard):
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= set(METRICS) | PROMETHEUS_BUILTIN_METRICS, (title, names - set(METRICS))


def test_alert_rules_use_only_exported_metrics():
    rules = yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert metric_names(rule["expr"]) <= set(METRICS) | PROMETHEUS_BUILTIN_METRICS, rule["alert"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (bootstrap installs prometheus)")
def test_promtool_checks_and_unit_tests_pass():
    check = subprocess.run(["promtool", "check", "rules", str(DASHBOARDS / "alerts.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=DASHBOARDS, capture_output=True, text=True)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_container_and_pod_variables_join_on_netns_info():
    """Picking a container or pod narrows `netns` to its namespace through bpftools_netns_info."""
    variables = {v["name"]: v for v in json.loads((DASHBOARDS / "bpftools.json").read_text())["templating"]["list"]}
    for name in ("container", "pod"):
        assert variables[name]["query"]["query"].startswith(f"label_values(bpftools_netns_info{{")
        assert variables[name]["query"]["query"].endswith(f", {name})")
    netns_query = variables["netns"]["query"]["query"]
    assert "bpftools_netns_info" in netns_query and 'container=~"$container"' in netns_query
    assert 'pod=~"$pod"' in netns_query
    names = list(variables)
    assert names.index("container") < names.index("netns") and names.index("pod") < names.index("netns")
