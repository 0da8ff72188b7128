#!/usr/bin/env python3
"""Write the Kubernetes manifests that copy files kept elsewhere, so each fact has one place:

  deploy/prometheusrule.yaml            <- dashboards/alerts.yml (Prometheus Operator)
  deploy/grafana-dashboards-configmap.yaml <- dashboards/*.json (Grafana sidecar)

Run `python3 deploy/generate.py` after editing those; tests/unit/test_deploy.py fails while a
generated file is out of date (`--check` does the same here).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict

import yaml

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = REPO / "dashboards"
DEPLOY = REPO / "deploy"
NAMESPACE = "bpftools"
LABELS = {"app.kubernetes.io/name": "bpftools"}


class _BlockStrings(yaml.SafeDumper):
    """Multi-line strings (PromQL, dashboard JSON) as `|` blocks, readable in a diff."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStrings.add_representer(str, _str)


def _dump(header: str, obj: dict) -> str:
    return header + yaml.dump(obj, Dumper=_BlockStrings, sort_keys=False, width=1000, allow_unicode=True)


def prometheus_rule() -> str:
    rules = yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())
    return _dump(
        "# GENERATED from dashboards/alerts.yml by deploy/generate.py: edit that file, then run it.\n"
        "# For the Prometheus Operator. kube-prometheus-stack selects rules by its release label:\n"
        "# deploy/kustomization.yaml adds it (set your release name in deploy/kustomize/release-label.yaml).\n",
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
         "metadata": {"name": "bpftools", "namespace": NAMESPACE, "labels": dict(LABELS)},
         "spec": {"groups": rules["groups"]}})


def dashboards_configmap() -> str:
    data = {path.name: json.dumps(json.loads(path.read_text()), indent=2) + "\n"
            for path in sorted(DASHBOARDS.glob("*.json"))}
    return _dump(
        "# GENERATED from dashboards/*.json by deploy/generate.py: edit those files, then run it.\n"
        "# Dashboards for the Grafana sidecar (kube-prometheus-stack: label grafana_dashboard=\"1\").\n",
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "bpftools-dashboards", "namespace": NAMESPACE,
                      "labels": {"grafana_dashboard": "1"}, "annotations": {"grafana_folder": "bpftools"}},
         "data": data})


GENERATED = {"prometheusrule.yaml": prometheus_rule, "grafana-dashboards-configmap.yaml": dashboards_configmap}


def generated() -> Dict[Path, str]:
    return {DEPLOY / name: make() for name, make in GENERATED.items()}


def main(argv) -> int:
    stale = [path for path, text in generated().items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(REPO)} is out of date: run python3 deploy/generate.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in generated().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
