"""The plugin loads into a real (headless) QGIS, adds its menu entry and unloads cleanly."""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_class_factory_loads_and_unloads(iface):
    from qgis.core import QgsApplication

    import gfm_plugin
    from gfm_plugin.plugin import RASTER_LAYER

    plugin = gfm_plugin.classFactory(iface)
    plugin.initGui()
    assert [a.text() for a in plugin.actions] == [
        "GFM panel", "Classify layer", "Fine-tune", "New training-labels layer",
        "Detect changes", "Fine-tune for changes", "New change-labels layer", "Pretrain…",
        "Get weights…", "Set up backend…", "Settings…"]
    menu = [c.args for c in iface.addPluginToRasterMenu.call_args_list]
    assert [m[1].text() for m in menu[-len(plugin.actions):]] == [a.text() for a in plugin.actions]
    layer_menus = [c.args for c in iface.addCustomActionForLayerType.call_args_list
                   if c.args[0] in plugin.layer_actions]
    assert [m[0].text() for m in layer_menus] == [
        "Classify with GFM", "Detect changes with GFM (as the later date)"]
    assert all(m[2:] == (RASTER_LAYER, True) for m in layer_menus)
    iface.addDockWidget.assert_called()
    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("gfm")
    assert provider is not None
    names = {a.id() for a in provider.algorithms()}
    assert names == {"gfm:classify", "gfm:finetune", "gfm:suggest", "gfm:geopile", "gfm:pretrain",
                     "gfm:export", "gfm:detect_change", "gfm:finetune_change"}
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
    iface.removeCustomActionForLayerType.assert_called()
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



def test_classify_with_gfm_on_a_raster_layers_menu_classifies_that_layer(iface, tmp_path):
    from osgeo import gdal
    from qgis.core import QgsProject, QgsRasterLayer

    import gfm_plugin

    path = str(tmp_path / "picked.tif")
    gdal.GetDriverByName("GTiff").Create(path, 8, 8, 3).FlushCache()
    layer = QgsRasterLayer(path, "picked")
    QgsProject.instance().addMapLayer(layer)
    plugin = gfm_plugin.classFactory(iface)
    plugin.initGui()
    try:
        called = []
        plugin.controller.classify_current = lambda: called.append(plugin.dock.raster_combo.currentLayer())
        iface.activeLayer.return_value = layer
        plugin.layer_actions[0].trigger()
        assert called == [layer]
    finally:
        iface.activeLayer.return_value = None
        plugin.unload()
        QgsProject.instance().removeAllMapLayers()


def test_detect_changes_on_a_raster_layers_menu_takes_it_as_the_later_date(iface, tmp_path):
    from osgeo import gdal
    from qgis.core import QgsProject, QgsRasterLayer

    import gfm_plugin

    layers = []
    for name in ("earlier", "later"):
        path = str(tmp_path / f"{name}.tif")
        gdal.GetDriverByName("GTiff").Create(path, 8, 8, 3).FlushCache()
        layers.append(QgsRasterLayer(path, name))
    QgsProject.instance().addMapLayers(layers)
    plugin = gfm_plugin.classFactory(iface)
    plugin.initGui()
    try:
        box = plugin.dock.change
        box.before_combo.setLayer(layers[0])
        jobs = []
        plugin.controller.run_job = lambda *args, **kw: jobs.append(args)
        box.set_models([{"name": "cd", "path": "/models/cd",
                         "model": {"name": "cd", "task": "change_detection"}},
                        {"name": "lc", "path": "/models/lc", "model": {"task": "segmentation"}}])
        assert box.model_combo.count() == 1  # change models only
        iface.activeLayer.return_value = layers[1]
        plugin.layer_actions[1].trigger()
        assert box.after_combo.currentLayer() is layers[1] and not box.isCollapsed()
        (title, job_type, params, _), = [a[:4] for a in jobs]
        assert job_type == "detect-change" and title == "Detect changes earlier → later"
        assert params["before"].endswith("earlier.tif") and params["after"].endswith("later.tif")
        assert params["model"] == "/models/cd"
    finally:
        iface.activeLayer.return_value = None
        plugin.unload()
        QgsProject.instance().removeAllMapLayers()
