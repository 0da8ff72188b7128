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
    return {opt for p in cmd.params if isinstance(p, click.Option)
            for opt in p.opts + p.secondary_opts if opt.startswith("--") and opt != "--help"}


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
    known = set().union(*(_long_flags(_commands()[p]) for p, pg in PAGES.items() if pg == page))
    text = (ROOT / "docs" / page).read_text()
    rows = re.findall(r"^\| `(--[a-z0-9-]+)", text, re.M)
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
