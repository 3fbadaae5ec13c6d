"""The plugin loads into a real (headless) QGIS, adds its menu entry and unloads cleanly."""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_class_factory_loads_and_unloads(iface):
    import gfm_plugin

    plugin = gfm_plugin.classFactory(iface)
    plugin.initGui()
    assert len(plugin.actions) == 1
    iface.addPluginToRasterMenu.assert_called()
    plugin.unload()
    assert plugin.actions == []
    iface.removePluginRasterMenu.assert_called()


def test_metadata_has_required_fields(qgis_app):
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "metadata.txt")
    general = cfg["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                "email", "repository", "tracker", "homepage", "tags", "hasProcessingProvider"):
        assert general.get(key), key
    from qgis.core import Qgis

    minimum = tuple(int(x) for x in general["qgisMinimumVersion"].split("."))
    assert Qgis.QGIS_VERSION_INT >= minimum[0] * 10000 + minimum[1] * 100
