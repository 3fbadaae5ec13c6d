"""The plugin loads into a real (headless) QGIS, adds its menu entry and unloads cleanly."""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_class_factory_loads_and_unloads(iface):
    from qgis.core import QgsApplication

    import gfm_plugin

    plugin = gfm_plugin.classFactory(iface)
    plugin.initGui()
    assert len(plugin.actions) == 1
    iface.addPluginToRasterMenu.assert_called()
    iface.addDockWidget.assert_called()
    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("gfm")
    assert provider is not None
    names = {a.id() for a in provider.algorithms()}
    assert names == {"gfm:classify", "gfm:finetune", "gfm:geopile", "gfm:pretrain", "gfm:export"}
    iface.mainWindow().show()  # the dock is a child of QGIS's window
    plugin.dock.show()
    QgsApplication.processEvents()
    plugin.dock.close()  # its X: the toolbar action must not stay checked
    QgsApplication.processEvents()
    assert not plugin.actions[0].isChecked()
    plugin.actions[0].trigger()  # one click shows it again
    assert plugin.dock.isVisible()
    iface.mainWindow().hide()
    plugin.unload()
    assert plugin.actions == [] and plugin.dock is None
    assert registry.providerById("gfm") is None
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
