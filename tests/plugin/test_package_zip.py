"""`make plugin`: an installable zip whose top folder is gfm_plugin/."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_zip_installs_and_loads(tmp_path, iface):
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_plugin.py"), str(tmp_path)],
                   check=True)
    (zip_path,) = tmp_path.glob("gfm_plugin-*.zip")
    assert zip_path.stat().st_size < 25 * 1024 * 1024
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert all(n.startswith("gfm_plugin/") for n in names)
        assert {"gfm_plugin/metadata.txt", "gfm_plugin/icon.svg", "gfm_plugin/__init__.py"} <= set(names)
        assert not any(n.endswith((".pyc", ".so", ".pth", ".onnx", ".safetensors")) for n in names)
        zf.extractall(tmp_path / "plugins")
    # load the extracted copy the way QGIS does: its folder on sys.path, classFactory(iface)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import gfm_plugin; assert gfm_plugin.__file__.startswith(sys.argv[1]);"
        "from qgis.testing import start_app; start_app();"
        "from qgis.testing.mocked import get_iface;"
        "p = gfm_plugin.classFactory(get_iface()); p.initGui(); p.unload(); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "plugins")],
                         capture_output=True, text=True, timeout=120,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip().endswith("ok"), out.stderr
