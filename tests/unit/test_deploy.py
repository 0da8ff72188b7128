"""Kubernetes manifests: schema-valid, with what the DaemonSet needs to load BPF on a node."""
import json
import re
from pathlib import Path

import pytest
import yaml

from bpftools.serve_config import DEFAULT_PORT

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_objects():
    return {(d["kind"], d["metadata"]["name"]): d for p in MANIFESTS for d in documents(p)}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_core_objects_match_the_kubernetes_schema(path):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in documents(path):
        if doc["apiVersion"].startswith("monitoring.coreos.com"):
            continue  # a CRD: checked below
        kubernetes_validate.validate(doc, "1.30", strict=True)


def test_daemonset_has_host_access_and_bpf_capabilities():
    ds = all_objects()[("DaemonSet", "bpftools")]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    container = spec["containers"][0]
    caps = set(container["securityContext"]["capabilities"]["add"])
    assert {"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN"} <= caps
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/sys/fs/bpf", "/sys/kernel/tracing", "/lib/modules", "/usr/src"} <= mounts
    volumes = {v["name"] for v in spec["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes
    assert container["ports"][0]["containerPort"] == DEFAULT_PORT


def test_daemonset_runs_on_clusters_with_apparmor_and_pod_security():
    objs = all_objects()
    namespace = objs[("Namespace", "bpftools")]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    template = objs[("DaemonSet", "bpftools")]["spec"]["template"]
    spec = template["spec"]
    container = spec["containers"][0]
    # The annotation for kubelets before 1.30, the field from 1.30 on.
    assert template["metadata"]["annotations"][
        f"container.apparmor.security.beta.kubernetes.io/{container['name']}"] == "unconfined"
    assert container["securityContext"]["appArmorProfile"] == {"type": "Unconfined"}
    assert "SYSLOG" in container["securityContext"]["capabilities"]["add"]  # else /proc/kallsyms reads as zeros
    account = objs[("ServiceAccount", spec["serviceAccountName"])]
    assert account["metadata"]["namespace"] == objs[("DaemonSet", "bpftools")]["metadata"]["namespace"]
    assert account["automountServiceAccountToken"] is False and spec["automountServiceAccountToken"] is False


def test_one_version_for_package_image_and_manifests():
    from importlib.metadata import version

    from bpftools import __version__

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bpftools.__version__"}
    assert version("bpftools") == __version__
    images = [c["image"] for d in all_objects().values() if d["kind"] == "DaemonSet"
              for c in d["spec"]["template"]["spec"]["containers"]]
    assert images and all(image == f"bpftools:{__version__}" for image in images)
    # no other copy of the version in the docs either (an image tag written out goes stale)
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        assert not re.search(r"bpftools:\d+\.\d+", doc.read_text()), doc.name


def test_license_file_matches_pyproject():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "**/__pycache__", ".pytest_cache", ".hypothesis", "*.egg-info"} <= ignored
    # What the image build needs must not be ignored.
    assert not ignored & {"bpf", "bpftools", "pyproject.toml", "README.md", "LICENSE"}


def test_service_and_servicemonitor_select_the_daemonset():
    objs = all_objects()
    pod_labels = objs[("DaemonSet", "bpftools")]["spec"]["template"]["metadata"]["labels"]
    svc = objs[("Service", "bpftools")]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    monitor = objs[("ServiceMonitor", "bpftools")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert svc["spec"]["ports"][0]["port"] == DEFAULT_PORT


def test_serve_config_in_the_configmap_is_a_valid_serve_config(tmp_path):
    from bpftools.serve_config import build_config, read_config_file

    path = tmp_path / "config.toml"
    path.write_text(all_objects()[("ConfigMap", "bpftools-config")]["data"]["config.toml"])
    config = build_config(read_config_file(str(path)), {})
    assert config.listen == f"0.0.0.0:{DEFAULT_PORT}" and config.drops and config.all_netns


def test_dashboard_configmap_matches_dashboards_dir():
    cm = all_objects()[("ConfigMap", "bpftools-dashboards")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    for name, text in cm["data"].items():
        assert json.loads(text) == json.loads((REPO / "dashboards" / name).read_text())


def test_generated_manifests_are_up_to_date():
    """deploy/prometheusrule.yaml and the dashboards ConfigMap come from dashboards/ (one place)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate", DEPLOY / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for path, text in generate.generated().items():
        assert path.read_text() == text, f"{path.name} is out of date: run python3 deploy/generate.py"


def test_prometheus_rule_carries_the_alert_rules_file():
    rule = all_objects()[("PrometheusRule", "bpftools")]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == all_objects()[("DaemonSet", "bpftools")]["metadata"]["namespace"]
    assert rule["spec"]["groups"] == yaml.safe_load((REPO / "dashboards" / "alerts.yml").read_text())["groups"]


def test_plain_prometheus_scrape_config_parses():
    config = yaml.safe_load((DEPLOY / "prometheus-scrape.yml").read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == {"bpftools", "bpftools-hosts"}


def test_probes_use_the_health_endpoints_and_the_web_config_can_be_turned_on(tmp_path):
    """Probes hit /-/healthy and /-/ready (no collection, no password); the commented
    web_config_file line of the ConfigMap points into the optional Secret's mount."""
    from bpftools.serve_config import build_config, read_config_file
    from bpftools.web import HEALTHY, READY

    spec = all_objects()[("DaemonSet", "bpftools")]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": HEALTHY, "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": READY, "port": "metrics"}
    web = next(v for v in spec["volumes"] if v["name"] == "web")
    assert web["secret"] == {"secretName": "bpftools-web", "optional": True}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "web")["mountPath"]
    text = all_objects()[("ConfigMap", "bpftools-config")]["data"]["config.toml"]
    turned_on = re.sub(r"^# (web_config_file = .*)$", r"\1", text, flags=re.M)
    assert turned_on != text
    path = tmp_path / "config.toml"
    path.write_text(turned_on)
    config = build_config(read_config_file(str(path)), {})
    assert config.web_config_file == f"{mount}/web.yml"


def test_systemd_unit_runs_serve_with_the_shipped_config(tmp_path):
    """deploy/bpftools-serve.service (plain hosts, the Vagrant VM, docs/runbooks.md): its command
    line parses, it reloads with SIGHUP, and deploy/serve.toml is a valid config for it."""
    import configparser
    import shlex
    import shutil
    import subprocess
    import sys

    from bpftools.cli.main import cli, register_commands
    from bpftools.serve_config import build_config, read_config_file

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((DEPLOY / "bpftools-serve.service").read_text())
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[:2] == ["/usr/local/bin/bpftools", "serve"]
    register_commands()
    with cli.commands["serve"].make_context("serve", argv[2:]) as ctx:
        assert ctx.params["config_file"] == "/etc/bpftools/serve.toml"
    assert unit["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    config = build_config(read_config_file(str(DEPLOY / "serve.toml")), {})
    assert config.listen == f"127.0.0.1:{DEFAULT_PORT}" and config.drops
    if shutil.which("systemd-analyze"):  # the unit as systemd reads it, with a bpftools that exists here
        bpftools = Path(sys.executable).parent / "bpftools"
        copy = tmp_path / "bpftools-serve.service"
        copy.write_text((DEPLOY / "bpftools-serve.service").read_text().replace("/usr/local/bin/bpftools", str(bpftools)))
        check = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


# --- the kustomization, the CRI socket, probes, priority, labels -----------------------------

OPERATOR_TARGET_LABELS = {"namespace", "pod", "container", "service", "endpoint", "job", "instance"}


@pytest.fixture(scope="module")
def rendered():
    """`kubectl kustomize deploy/`, as the docs tell users to run it."""
    import shutil
    import subprocess

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (bootstrap.sh installs kubernetes-client)")
    proc = subprocess.run(["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_the_kustomization_renders_every_manifest_and_it_validates(rendered):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    names = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    assert names == set(all_objects()), "deploy/kustomization.yaml must list every manifest in deploy/"
    for doc in rendered:
        if not doc["apiVersion"].startswith("monitoring.coreos.com"):
            kubernetes_validate.validate(doc, "1.30", strict=True)


def test_the_release_label_is_set_in_one_place_for_the_operator_objects(rendered):
    patch = yaml.safe_load((DEPLOY / "kustomize" / "release-label.yaml").read_text())
    release = next(op["value"] for op in patch if op["path"] == "/metadata/labels/release")
    for doc in rendered:
        if doc["apiVersion"].startswith("monitoring.coreos.com"):
            assert doc["metadata"]["labels"]["release"] == release, doc["kind"]
            assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "bpftools"


def test_the_cri_sockets_are_mounted_read_only():
    import os

    from bpftools import cri

    container = all_objects()[("DaemonSet", "bpftools")]["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for _runtime, socket in cri.RUNTIME_SOCKETS:
        mount = mounts.get(os.path.dirname(socket))
        assert mount is not None and mount.get("readOnly") is True, socket
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "crictl" not in dockerfile.replace("No crictl", "")


def test_the_priority_class_is_one_managed_clusters_admit():
    objs = all_objects()
    name = objs[("DaemonSet", "bpftools")]["spec"]["template"]["spec"]["priorityClassName"]
    assert not name.startswith("system-")  # GKE admits the system-* classes only in kube-system
    assert 0 < objs[("PriorityClass", name)]["value"] < 1_000_000_000  # user classes stay below a billion


def _dashboard_label_names() -> set:
    """Label names the dashboards' queries match on, group by or read values of."""
    found = set()
    for path in (REPO / "dashboards").glob("*.json"):
        text = json.dumps(json.loads(path.read_text()))
        found |= set(re.findall(r"[{,]\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\\\"", text))
        found |= set(re.findall(r"label_values\([^)]*?,\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", text))
        found |= {n.strip() for group in re.findall(r"\bby \(([^)]*)\)", text) for n in group.split(",")}
    return found - {""}


def test_servicemonitor_metrics_and_dashboard_agree_on_label_names():
    from bpftools.metrics import METRICS

    metric_labels = set().union(*(labels for _type, labels, _help in METRICS.values()))
    assert not metric_labels & OPERATOR_TARGET_LABELS, "these become exported_*: rename them"
    monitor = all_objects()[("ServiceMonitor", "bpftools")]
    assert not any(e.get("honorLabels") for e in monitor["spec"]["endpoints"])
    relabelled = {r["targetLabel"] for e in monitor["spec"]["endpoints"] for r in e.get("relabelings", [])}
    used = _dashboard_label_names()
    assert {"k8s_pod", "container_name", "netns"} <= used  # (the parser sees the dashboard's queries)
    unknown = used - metric_labels - {"job", "instance", "__name__"} - relabelled
    assert not unknown, f"the dashboard uses labels no metric or the ServiceMonitor gives: {unknown}"
