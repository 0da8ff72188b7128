"""The reference pages in docs/ document every flag of their commands, and document no flag
that does not exist; the README keeps CI's test command and stays one screen long."""
import re
from pathlib import Path

import click
import pytest

from bpftools.cli.main import cli, register_commands

ROOT = Path(__file__).resolve().parents[2]

# command path -> its reference page
PAGES = {
    "trace-drops": "trace-drops.md",
    "encap-stats": "encap-stats.md",
    "xdp-decap": "xdp-decap.md",
    "xdp-decap-allow": "xdp-decap.md",
    "serve": "serve.md",
    "diagnose ping": "diagnose.md",
    "lab list": "lab.md",
    "lab up": "lab.md",
    "lab break": "lab.md",
    "lab fix": "lab.md",
    "lab down": "lab.md",
    "demo": "demo.md",
    "doctor": "status.md",
    "status": "status.md",
    "detach": "status.md",
    "mount": "status.md",
}


def _commands():
    register_commands()
    found = {}

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])
        else:
            found[" ".join(path)] = cmd

    walk(cli, [])
    return found


def _long_flags(cmd: click.Command):
    """Each option's long names, or its short name where it has no long one (`lab break -6`)."""
    flags = set()
    for param in cmd.params:
        if isinstance(param, click.Option):
            names = [o for o in param.opts + param.secondary_opts if o.startswith("--")]
            flags.update(names or param.opts)
    return flags - {"--help"}


def _all_flags(cmd: click.Command):
    return {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}


def test_every_command_has_a_page():
    missing = sorted(set(_commands()) - set(PAGES))
    assert not missing, f"add these commands to docs/ (and to PAGES here): {missing}"


@pytest.mark.parametrize("path", sorted(PAGES))
def test_every_flag_is_documented(path):
    cmd = _commands()[path]
    page = (ROOT / "docs" / PAGES[path]).read_text()
    undocumented = sorted(f for f in _long_flags(cmd) if f"`{f}" not in page)
    assert not undocumented, f"document {undocumented} of `bpftools {path}` in docs/{PAGES[path]}"


@pytest.mark.parametrize("page", sorted(set(PAGES.values())))
def test_option_tables_name_real_flags(page):
    """Rows of an option table (`| `--flag ...` | ...`) name flags of the page's commands."""
    known = set().union(*(_all_flags(_commands()[p]) for p, pg in PAGES.items() if pg == page))
    text = (ROOT / "docs" / page).read_text()
    rows = re.findall(r"^\| `(--[a-z0-9-]+(?:\.[a-z0-9-]+)*|-[a-zA-Z0-9])\b", text, re.M)  # --web.config.file
    assert rows or not known, f"docs/{page} has no option table"
    unknown = sorted(set(rows) - known)
    assert not unknown, f"docs/{page} documents flags that do not exist: {unknown}"


def test_readme_is_one_screen_and_keeps_the_ci_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./bootstrap.sh test" in readme  # .ci/run calls it; users copy it from here
    assert "./bootstrap.sh test" in (ROOT / ".ci" / "run").read_text()
    assert len(readme.splitlines()) <= 260
    assert "<!-- section" not in readme


def test_docs_links_resolve():
    for md in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", md.read_text()):
            assert (md.parent / target).resolve().exists(), f"{md.name} links to missing {target}"


JARGON = re.compile(r"main job|the seeds?\b|seed:|the tutorials?\b", re.I)


def test_no_internal_jargon_in_docs_or_help():
    for md in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert not JARGON.search(md.read_text()), f"{md.name}: {JARGON.search(md.read_text()).group(0)}"
    for path, cmd in _commands().items():
        assert not JARGON.search(cmd.help or ""), f"`bpftools {path} --help`"


def test_every_diagnose_cause_is_documented():
    from bpftools.diagnose.checks import CAUSES

    page = (ROOT / "docs" / "diagnose.md").read_text()
    missing = [cause for cause in CAUSES if f"| `{cause}` |" not in page]
    assert not missing, f"add {missing} to the causes table of docs/diagnose.md"


def test_no_internal_jargon_in_the_labs_output():
    from bpftools.lab import TOPOLOGIES

    for topo in TOPOLOGIES.values():
        texts = [topo.summary] + [fault.summary for fault in topo.faults.values()]
        for text in texts:
            assert not JARGON.search(text), f"lab {topo.name}: {text}"


def test_every_metric_and_alert_is_documented():
    import yaml

    from bpftools.metrics import METRICS, RUNTIME_METRICS

    page = (ROOT / "docs" / "metrics.md").read_text()
    alerts = yaml.safe_load((ROOT / "dashboards" / "alerts.yml").read_text())
    names = [*METRICS, *RUNTIME_METRICS] + [rule["alert"] for group in alerts["groups"]
                                            for rule in group["rules"] if "alert" in rule]
    missing = [name for name in names if f"`{name}`" not in page]
    assert not missing, f"document {missing} in docs/metrics.md"


def _documented_fields(page: str, obj: dict):
    text = (ROOT / "docs" / page).read_text()
    return [key for key in obj if f"`{key}`" not in text]


def _dummy(cls):
    import dataclasses

    return cls(**{f.name: None for f in dataclasses.fields(cls)})


def test_every_json_field_is_documented():
    from bpftools import encap_stats, xdp_decap
    from bpftools.drop_events import DropEvent, summary_json
    from bpftools.lab import status as lab_status

    drop = _dummy(DropEvent)
    drop.ts, drop.stack, drop.packet = 0.0, [], b""
    samples = {
        "trace-drops.md": [drop.as_json(), summary_json([], 0), {"type": "lost", "count": 0}],
        "encap-stats.md": [encap_stats.counter_json(_dummy(encap_stats.CounterRow), 0, "host"),
                           encap_stats.pair_json(_dummy(encap_stats.PairRow), 1, 0, "host")],
        "xdp-decap.md": [{name: 0 for name in xdp_decap.COUNTERS}],
        "lab.md": lab_status()[:1],
    }
    for page, objects in samples.items():
        for obj in objects:
            missing = _documented_fields(page, obj)
            assert not missing, f"document the JSON fields {missing} in docs/{page}"


def test_shell_completion_works_as_the_readme_says():
    import os
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    assert "_BPFTOOLS_COMPLETE=bash_source bpftools" in readme
    env = dict(os.environ, _BPFTOOLS_COMPLETE="bash_complete", COMP_WORDS="bpftools trace-drops --exclude-r",
               COMP_CWORD="2")
    out = subprocess.run([sys.executable, "-m", "bpftools"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "plain,--exclude-reason" in out.stdout.splitlines()


def test_paths_named_in_the_docs_exist():
    pattern = re.compile(r"`((?:bpftools|bpf|tests|benchmarks|deploy|dashboards|\.ci)/[A-Za-z0-9_./-]+)`")
    for md in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path in pattern.findall(md.read_text()):
            assert (ROOT / path).exists(), f"{md.name} names {path}, which does not exist"


def test_the_readme_has_an_example_of_every_command():
    readme = (ROOT / "README.md").read_text()
    commands = {path.split()[0] for path in _commands()}
    missing = sorted(c for c in commands if f"bpftools {c} " not in readme and f"bpftools {c}\n" not in readme)
    assert not missing, f"add an example of {missing} to the README"
