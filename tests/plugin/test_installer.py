"""The backend installer for real: from the plugin zip's bundled backend into a fresh venv
through pip as this machine configures it, then the installed `gfm serve` started and
connected through the plugin's own code; reruns, repairs, refusals and failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from gfm_plugin.installer.steps import STATE_FILE, Installer, InstallError
from gfm_plugin.installer.torch_build import choose

REPO = Path(__file__).resolve().parents[2]


def run_installer(plugins: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gfm_plugin.installer", *args], cwd=plugins,
                          capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def plugins(tmp_path_factory) -> Path:
    """The plugin zip, built and unpacked as QGIS unpacks it."""
    out = tmp_path_factory.mktemp("zip")
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_plugin.py"), str(out)], check=True)
    (zip_path,) = out.glob("gfm_plugin-*.zip")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(out / "plugins")
    return out / "plugins"


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    path = tmp_path_factory.mktemp("venv") / "venv"
    yield path
    shutil.rmtree(path, ignore_errors=True)  # about 6 GB


def test_installed_from_the_zip_then_served_and_connected(plugins, venv, tmp_path) -> None:
    done = run_installer(plugins, "--venv", str(venv), "--python", sys.executable)
    assert done.returncode == 0, done.stderr + done.stdout[-3000:]
    summary = json.loads(done.stdout[done.stdout.rindex("\n{"):])
    assert summary["backend"] == "0.1.0" and summary["torch"].startswith("2.14.1")
    assert "torch: " in done.stdout and str(plugins / "gfm_plugin" / "backend") in done.stdout
    assert json.loads((venv / STATE_FILE).read_text())["state"] == "complete"

    sys.path.insert(0, str(plugins))  # the plugin's own code, as QGIS loads it from the zip
    try:
        from gfm_plugin.backend_process import start_local

        client = start_local(summary["python"], str(tmp_path / "state"))
        assert client.health()["version"] == "0.1.0" and client.jobs() == []
    finally:
        sys.path.remove(str(plugins))
        info = tmp_path / "state" / "server.json"
        if info.exists():
            os.kill(json.loads(info.read_text())["pid"], signal.SIGTERM)

    again = run_installer(plugins, "--venv", str(venv), "--python", sys.executable)
    assert again.returncode == 0 and "torch: already installed" in again.stdout
    assert "GFM backend 0.1.0: already installed" in again.stdout and "$ " not in again.stdout


def test_an_interrupted_install_is_repaired(plugins, venv) -> None:
    if not (venv / STATE_FILE).exists():
        pytest.skip("needs the venv of the test above")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "gfm-qgis"],
                   check=True, capture_output=True)
    (venv / STATE_FILE).write_text(json.dumps({"state": "installing"}))
    done = run_installer(plugins, "--venv", str(venv), "--python", sys.executable)
    assert done.returncode == 0, done.stderr
    assert "torch: already installed" in done.stdout and "GFM backend not installed -> 0.1.0" in done.stdout
    assert json.loads((venv / STATE_FILE).read_text())["state"] == "complete"


def test_cancelled_while_pip_runs_and_nothing_looks_finished(tmp_path) -> None:
    installer: Installer

    def log(line: str) -> None:
        if line.startswith("$ ") and " pip " in line:
            threading.Timer(1.0, installer.cancel).start()

    installer = Installer(venv=tmp_path / "venv", python=sys.executable, torch_index="none", log=log)
    with pytest.raises(InstallError, match="cancelled; run the setup again"):
        installer.run()
    assert json.loads((tmp_path / "venv" / STATE_FILE).read_text())["state"] == "installing"


def test_failures_say_what_to_do(plugins, tmp_path) -> None:
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\necho '[[3, 9, 18], \"/usr/bin/python3.9\"]'\n")
    old.chmod(0o755)
    done = run_installer(plugins, "--venv", str(tmp_path / "v1"), "--python", str(old))
    assert done.returncode == 2 and "is Python 3.9.18; the backend needs 3.10 or newer" in done.stderr

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("mine")
    done = run_installer(plugins, "--venv", str(foreign), "--python", sys.executable)
    assert done.returncode == 2 and "is not a virtual environment of this installer" in done.stderr
    assert (foreign / "thesis.docx").read_text() == "mine"

    offline = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
               "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"}
    done = run_installer(plugins, "--venv", str(tmp_path / "v2"), "--python", sys.executable,
                         "--torch-index", "none", env=offline)
    assert done.returncode == 2 and "is this machine offline" in done.stderr
    assert "run by hand:" in done.stderr and "pip --disable-pip-version-check" in done.stderr
    assert json.loads((tmp_path / "v2" / STATE_FILE).read_text())["state"] == "installing"


@pytest.mark.parametrize("system, machine, driver, reachable, build, index", [
    ("linux", "x86_64", None, True, "cpu", "https://download.pytorch.org/whl/cpu/"),
    ("linux", "x86_64", None, False, "pypi", None),
    ("linux", "x86_64", ("580.95", "RTX 4090"), True, "cu130", None),
    ("linux", "x86_64", ("570.10", "A100"), True, "cu128", "https://download.pytorch.org/whl/cu128/"),
    ("win32", "AMD64", ("560.94", "RTX 3060"), True, "cu126", "https://download.pytorch.org/whl/cu126/"),
    ("linux", "x86_64", ("470.2", "K80"), True, "cpu", "https://download.pytorch.org/whl/cpu/"),
    ("win32", "AMD64", None, True, "pypi", None),
    ("darwin", "arm64", None, True, "pypi", None),
])
def test_torch_build_for_the_machine(system, machine, driver, reachable, build, index) -> None:
    choice = choose("auto", system=system, machine=machine, driver=driver,
                    is_reachable=lambda url: reachable)
    assert (choice.build, choice.index_url) == (build, index), choice.reason
    assert choice.reason


def test_a_full_disk_is_refused_before_anything_is_written(tmp_path, monkeypatch) -> None:
    from gfm_plugin.installer import steps
    from gfm_plugin.installer.torch_build import TorchChoice

    monkeypatch.setitem(steps.NEEDED_GB, "cpu", 1e9)
    installer = Installer(venv=tmp_path / "venv", python=sys.executable)
    installer.choice = TorchChoice("cpu", None, "test")
    with pytest.raises(InstallError, match="not enough disk space in .*GB free, the backend needs"):
        installer._space()
    assert not (tmp_path / "venv").exists()
