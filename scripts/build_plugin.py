"""Build dist/gfm_plugin-VERSION.zip for QGIS's "Install from ZIP".

The zip's top folder is gfm_plugin/ with metadata.txt and the icon copied in; only
source and resource files go in (no caches, binaries or weights).
"""

from __future__ import annotations

import configparser
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {".py", ".svg", ".png", ".qml", ".txt", ".md", ".ui", ".json"}


def build(out_dir: Path = REPO / "dist") -> Path:
    meta = configparser.ConfigParser()
    meta.read(REPO / "metadata.txt")
    version = meta["general"]["version"]
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
    tmp.replace(target)
    return target


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "dist"))
