"""The plugin zip carries the backend as source, the plugin's own version, and pip installs
it from there: what a user with only the zip (and no repository) has to start from."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from gfm_backend import __version__

REPO = Path(__file__).resolve().parents[2]


def test_the_zip_carries_an_installable_backend(tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_plugin.py"), str(tmp_path)],
                   check=True, capture_output=True)
    (zip_path,) = tmp_path.glob(f"gfm_plugin-{__version__}.zip")
    assert zip_path.stat().st_size < 2 * 1024 * 1024  # source only
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    backend = tmp_path / "unzipped" / "gfm_plugin" / "backend"
    assert {"gfm_plugin/backend/pyproject.toml",
            "gfm_plugin/backend/backend/gfm_backend/cli.py",
            "gfm_plugin/backend/backend/gfm_backend/tasks/params.py"} <= names
    assert not any(n.endswith((".pyc", ".so", ".pyd", ".pth", ".onnx", ".safetensors")) for n in names)
    # no dependencies fetched: the bundled source itself must build and import
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(backend)],
                   check=True, capture_output=True, timeout=300)
    out = subprocess.run([sys.executable, "-c", "import gfm_backend, sys; print(gfm_backend.__version__, "
                          "gfm_backend.__file__)"], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    version, where = out.stdout.split()
    assert version == __version__ and where.startswith(str(target))


def test_plugin_and_backend_are_released_together(tmp_path, monkeypatch):
    import pytest

    from scripts import build_plugin

    plugin, plugin_module, package, module = build_plugin.versions()
    assert plugin == plugin_module == package == module == __version__
    monkeypatch.setattr(build_plugin, "versions", lambda: ("0.2.0", "0.2.0", "0.1.0", "0.1.0"))
    with pytest.raises(SystemExit, match="versions differ"):
        build_plugin.build(tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-built
