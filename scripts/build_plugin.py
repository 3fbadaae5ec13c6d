"""Build dist/gfm_plugin-VERSION.zip for QGIS's "Install from ZIP".

The zip's top folder is gfm_plugin/ with metadata.txt and the icon copied in; only
source and resource files go in (no caches, binaries or weights). The backend travels
with it as source, `gfm_plugin/backend/` (`pyproject.toml` with the pinned dependencies,
`gfm_backend/`), the same version as the plugin, so a user with only the zip can install
it into a virtual environment of its own (`pip install gfm_plugin/backend`).
"""

from __future__ import annotations

import configparser
import re
import sys
import zipfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {".py", ".svg", ".png", ".qml", ".txt", ".md", ".ui", ".json"}


BACKEND_ALLOWED = {".py", ".typed", ".md", ".toml"}


def versions() -> tuple[str, str, str, str]:
    """The plugin's (metadata.txt and its module), the backend package's and module's version."""
    meta = configparser.ConfigParser()
    meta.read(REPO / "metadata.txt")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    module = re.search(r'__version__ = "([^"]+)"',
                       (REPO / "backend" / "gfm_backend" / "__init__.py").read_text(encoding="utf-8"))
    plugin = re.search(r'__version__ = "([^"]+)"',
                       (REPO / "gfm_plugin" / "__init__.py").read_text(encoding="utf-8"))
    return (meta["general"]["version"], plugin.group(1) if plugin else "?", project["version"],
            module.group(1) if module else "?")


def _add_backend(zf: zipfile.ZipFile) -> None:
    """The backend's source and its project file (installable with pip, no binaries)."""
    top = Path("gfm_plugin") / "backend"
    zf.write(REPO / "pyproject.toml", top / "pyproject.toml")
    zf.write(REPO / "README.md", top / "README.md")
    for path in sorted((REPO / "backend" / "gfm_backend").rglob("*")):
        if path.is_file() and path.suffix in BACKEND_ALLOWED and "__pycache__" not in path.parts:
            zf.write(path, top / "backend" / path.relative_to(REPO / "backend"))


def build(out_dir: Path = REPO / "dist") -> Path:
    version, plugin_module, backend_version, module_version = versions()
    if len({version, plugin_module, backend_version, module_version}) != 1:
        raise SystemExit(f"versions differ: plugin {version} (gfm_plugin {plugin_module}), backend "
                         f"package {backend_version}, gfm_backend {module_version}; release them "
                         "together")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"gfm_plugin-{version}.zip"
    tmp = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((REPO / "gfm_plugin").rglob("*")):
            if path.is_file() and path.suffix in ALLOWED and "__pycache__" not in path.parts:
                zf.write(path, Path("gfm_plugin") / path.relative_to(REPO / "gfm_plugin"))
        zf.write(REPO / "metadata.txt", "gfm_plugin/metadata.txt")
        zf.write(REPO / "resources" / "icon.svg", "gfm_plugin/icon.svg")
        if (REPO / "LICENSE").exists():
            zf.write(REPO / "LICENSE", "gfm_plugin/LICENSE")
        _add_backend(zf)
    tmp.replace(target)
    return target


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "dist"))
