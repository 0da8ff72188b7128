"""The user install the README documents: `pipx install --system-site-packages .` into a fresh
virtual environment (bcc comes from the distribution), then `bpftools --version` and `doctor`."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("pipx") is None, reason="pipx not installed (./bootstrap.sh test installs it)")
LOCAL_STATE = shutil.ignore_patterns(".venv", ".git", "__pycache__", "build", "*.egg-info", ".pytest_cache",
                                     ".hypothesis", "results")


def test_pipx_install_with_system_site_packages_runs_version_and_doctor(tmp_path):
    source = tmp_path / "src"  # pip builds in the source tree: a copy keeps the checkout clean
    shutil.copytree(REPO, source, symlinks=True, ignore=LOCAL_STATE)
    env = dict(os.environ, PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"))
    install = subprocess.run(["pipx", "install", "--system-site-packages", str(source)], env=env,
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout + install.stderr
    bpftools = tmp_path / "bin" / "bpftools"
    version = subprocess.run([str(bpftools), "--version"], capture_output=True, text=True, timeout=60)
    from bpftools import __version__

    assert version.returncode == 0 and version.stdout.strip() == f"bpftools, version {__version__}", version.stderr
    where = subprocess.run([str(tmp_path / "pipx" / "venvs" / "bpftools" / "bin" / "python"), "-c",
                            "import bpftools, bcc; print(bpftools.__file__)"], capture_output=True, text=True, timeout=60,
                           cwd=tmp_path)
    assert where.returncode == 0 and where.stdout.startswith(str(tmp_path)), where.stdout + where.stderr
    doctor = subprocess.run([str(bpftools), "doctor"], capture_output=True, text=True, timeout=300)
    assert doctor.returncode == 0, doctor.stderr
    assert "capabilities:" in doctor.stdout and doctor.stdout.rstrip().endswith("changed:       nothing")
    assert "Traceback" not in doctor.stderr
