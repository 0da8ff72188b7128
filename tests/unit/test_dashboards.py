"""Dashboards and alert rules: structure, variables, and only metrics the exporter exports."""
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bpftools.metrics import METRICS, RUNTIME_METRICS

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__all", "__name__"}
PROMETHEUS_BUILTIN_METRICS = {"up", *RUNTIME_METRICS}
# Every form of the netns label (bpftools' --netns selectors): commands in alerts must work for each.
NETNS_LABELS = ("host", "ns1", "docker:web", "pod:default/web-0", "inode:4026532301", "it's")


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


def test_has_job_instance_netns_device_variables(dashboard):
    assert {"job", "instance", "netns", "device"} <= {v["name"] for v in dashboard["templating"]["list"]}


def test_every_selector_is_scoped_to_the_job(dashboard):
    """process_* and up exist for every exporter: without the job they would mix with others'."""
    texts = [expr for _title, expr in expressions(dashboard)]
    texts += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["name"] not in ("datasource", "job")]
    for text in texts:
        for name, selector in re.findall(r"\b([a-z_]+)\{([^}]*)\}", text):
            if name in set(METRICS) | PROMETHEUS_BUILTIN_METRICS:
                assert 'job=~"$job"' in selector, (name, text)


def test_every_panel_has_a_unit(dashboard):
    for panel in panels(dashboard):
        if panel["type"] != "row":
            assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]


def test_exporter_up_shows_zero_for_a_stopped_exporter_not_no_data(dashboard):
    """A join with a bpftools_* series yields nothing once the exporter is down: use `up` alone."""
    (panel,) = [p for p in panels(dashboard) if p["title"] == "Exporter up"]
    (target,) = panel["targets"]
    assert metric_names(target["expr"]) == {"up"} and " on " not in target["expr"] and "group_" not in target["expr"]
    mappings = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert mappings["0"]["text"] == "DOWN" and mappings["1"]["text"] == "UP"


def test_rates_use_rate_interval(dashboard):
    for title, expr in expressions(dashboard):
        for window in re.findall(r"(?:rate|increase)\([^\[]*\[([^\]]+)\]", expr):
            assert window in ("$__rate_interval", "$__range"), (title, expr)


def test_queries_only_exported_metrics(dashboard):
    for title, expr in expressions(dashboard):
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= set(METRICS) | PROMETHEUS_BUILTIN_METRICS, (title, names - set(METRICS))


def alert_rules():
    for group in yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())["groups"]:
        yield from group["rules"]


def test_alert_rules_use_only_exported_metrics():
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= set(METRICS) | PROMETHEUS_BUILTIN_METRICS, rule["alert"]


RUNBOOKS = DASHBOARDS.parent / "docs" / "runbooks.md"


def runbook_sections() -> dict:
    """`## Title` of docs/runbooks.md -> its text."""
    parts = re.split(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_alert_waits_and_has_a_runbook():
    """`for:` on every rule: nothing fires on a single evaluation (alerts_test.yml shows a single
    drop, a single burst and a single scrape error firing nothing); a runbook_url (what
    Alertmanager and Grafana templates read) to the alert's own section of docs/runbooks.md."""
    sections = runbook_sections()
    for rule in alert_rules():
        assert rule.get("for") and rule["for"] != "0s", rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("https://") and url.endswith(f"docs/runbooks.md#{rule['alert'].lower()}"), url
        assert rule["alert"] in sections, f"add a section ## {rule['alert']} to docs/runbooks.md"
        for part in ("**What it means.**", "**What to run"):
            assert part in sections[rule["alert"]], (rule["alert"], part)
    assert {"Reaching a node's bpftools"} | {rule["alert"] for rule in alert_rules()} == set(sections)


def test_there_is_an_absent_rule_for_a_job_gone_from_discovery():
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert any(expr.startswith('absent(up{job="bpftools"})') for expr in exprs.values())


def test_runbooks_say_how_to_reach_a_node_in_kubernetes_and_on_a_plain_host():
    reach = runbook_sections()["Reaching a node's bpftools"]
    assert "kubectl -n bpftools exec" in reach and "spec.nodeName=NODE" in reach
    assert "deploy/bpftools-serve.service" in reach and "journalctl -u bpftools-serve" in reach


RUNBOOK_PLACEHOLDERS = {"NETNS": "pod:default/web-0", "REASON": "NO_SOCKET", "DEVICE": "eth0", "DST": "10.0.0.1",
                        "FILE": "serve.toml"}


def test_runbook_commands_parse():
    """Every `bpftools ...` line of docs/runbooks.md (code blocks and inline) is a real command."""
    from bpftools.cli.main import cli, register_commands

    register_commands()
    text = RUNBOOKS.read_text()
    lines = re.findall(r"^(?:sudo )?bpftools (.+)$", text, re.M) + re.findall(r"`bpftools ([^`]+)`", text)
    assert len(lines) >= 8
    for line in lines:
        argv = [RUNBOOK_PLACEHOLDERS.get(word, word) for word in shlex.split(line.replace("'NETNS'", "NETNS")
                                                                             .replace("'REASON'", "REASON"))]
        command, args = cli, argv
        while isinstance(command, type(cli)) and args and args[0] in command.commands:
            command, args = command.commands[args[0]], args[1:]
        assert command is not cli, line
        with command.make_context(argv[0], list(args)) as ctx:
            if "--netns" in args:
                assert ctx.params["netns"] == "pod:default/web-0", line


def test_there_are_alerts_on_a_filling_map_and_on_scrape_errors():
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert "bpftools_bpf_map_entries / bpftools_bpf_map_max_entries" in exprs["BpftoolsMapFilling"]
    assert "bpftools_scrape_errors_total" in exprs["BpftoolsScrapeErrors"] and "source" in exprs["BpftoolsScrapeErrors"]


def render(template: str, labels: dict) -> str:
    """The part of Prometheus' templating runbooks use: {{ $labels.NAME }}, and the quote doubling
    inside '…' ({{ reReplaceAll "'" "'\\''" $labels.NAME }}, Go's regexp replace)."""
    template = re.sub(r"""\{\{\s*reReplaceAll "'" "'\\\\''" \$labels\.(\w+)\s*\}\}""",
                      lambda m: labels[m.group(1)].replace("'", "'\\''"), template)
    return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], template)


def bpftools_commands(text: str):
    """Each `bpftools ...` command line (in backquotes) of a runbook, as argv without `bpftools`."""
    for match in re.finditer(r"`bpftools ([^`]+)`", text):
        yield shlex.split(match.group(1))


@pytest.mark.parametrize("netns", NETNS_LABELS)
def test_runbook_commands_parse_for_every_netns_label(netns):
    from bpftools.cli.main import cli, register_commands

    register_commands()
    labels = {"netns": netns, "device": "eth0", "reason": "NETFILTER_DROP", "instance": "h1:9654",
              "source": "encap:ns1/veth1", "map": "drop_counts", "program": "bpftools_ec_in", "hook": "xdp"}
    seen = 0
    for rule in alert_rules():
        runbook = render(rule["annotations"]["description"], labels)
        for argv in bpftools_commands(runbook):
            command = cli.commands[argv[0]]
            with command.make_context(argv[0], argv[1:]) as ctx:  # parses: options exist, values fit
                if "--netns" in argv:
                    assert ctx.params["netns"] == netns, (rule["alert"], argv)
            seen += 1
    assert seen >= 5


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (bootstrap installs prometheus)")
def test_promtool_checks_and_unit_tests_pass():
    check = subprocess.run(["promtool", "check", "rules", str(DASHBOARDS / "alerts.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=DASHBOARDS, capture_output=True, text=True)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_container_and_pod_variables_join_on_netns_info():
    """Picking a container or pod narrows `netns` to its namespace through bpftools_netns_info."""
    variables = {v["name"]: v for v in json.loads((DASHBOARDS / "bpftools.json").read_text())["templating"]["list"]}
    for name, label in (("container", "container_name"), ("pod", "k8s_pod")):
        assert variables[name]["query"]["query"].startswith(f"label_values(bpftools_netns_info{{")
        assert variables[name]["query"]["query"].endswith(f", {label})")
    netns_query = variables["netns"]["query"]["query"]
    assert "bpftools_netns_info" in netns_query and 'container_name=~"$container"' in netns_query
    assert 'k8s_pod=~"$pod"' in netns_query
    names = list(variables)
    assert names.index("container") < names.index("netns") and names.index("pod") < names.index("netns")
