"""The dock against a backend reached by URL and token, as if it were a colleague's GPU
server: nothing is passed by path; inputs go up (`POST /files`), results come down into
the local results folder, and the layers are added from there."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRasterLayer
from test_end_to_end import wait_for

from gfm_plugin.remote_files import sidecars, upload


@pytest.fixture
def remote(plugin, backend_server, tmp_path):
    from gfm_plugin.settings import BackendSettings

    _, state = backend_server
    info = json.loads((state / "server.json").read_text())
    plugin.settings = BackendSettings(mode="remote", url=info["url"], token=info["token"],
                                      results_dir=str(tmp_path / "client"))
    plugin.client = None
    return plugin, state


def test_remote_classify_uploads_the_raster_and_downloads_the_results(remote, backend_outputs,
                                                                       tmp_path):
    plugin, state = remote
    raster = tmp_path / "only-here" / "scene.tif"
    raster.parent.mkdir()
    raster.write_bytes((backend_outputs / "scene.tif").read_bytes())
    (raster.parent / "scene.tif.aux.xml").write_text("<PAMDataset/>")  # travels with it
    layer = QgsRasterLayer(str(raster), "scene")
    QgsProject.instance().addMapLayer(layer)
    assert plugin.connect(start=False)
    plugin.dock.raster_combo.setLayer(layer)
    task = plugin.classify_current()
    wait_for(task)
    assert task.info["state"] == "succeeded", task.error
    assert set(task.params["raster"]) == {"file"}  # sent, not named by path
    job = plugin.client.job(task.job_id)
    server_out = Path(job["params"]["out"])
    assert server_out.parent.parent == state / "outputs"
    assert Path(job["params"]["raster"]).is_relative_to(state / "uploads")
    local = Path(task.local_files["classes.tif"])
    assert local.parent.parent == tmp_path / "client" / "results"
    assert local.read_bytes() == (server_out / "classes.tif").read_bytes()
    group = QgsProject.instance().layerTreeRoot().findGroup("scene")
    sources = [n.layer().source().split("|")[0] for n in group.findLayers()]
    assert all(Path(s).parent == local.parent for s in sources), sources
    assert task.transfer_s > 0
    # the upload showed in the Jobs list, and that row became the job's
    rows = [plugin.dock.jobs.topLevelItem(i) for i in range(plugin.dock.jobs.topLevelItemCount())]
    ids = [row.data(0, 256) for row in rows]
    assert task.job_id in ids and not any(str(i).startswith("pending:") for i in ids)


def test_content_the_server_has_is_not_sent_again(remote, backend_outputs, tmp_path):
    plugin, _ = remote
    assert plugin.connect(start=False)
    path = tmp_path / "labels.gpkg"
    path.write_bytes((backend_outputs / "labels.gpkg").read_bytes())
    sent: list[int] = []
    first = upload(plugin.client, path, lambda done, total: sent.append(done))
    again: list[int] = []
    second = upload(plugin.client, path, lambda done, total: again.append(done))
    assert first["sha256"] == second["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert first["complete"] and second["complete"] and first["id"] != second["id"]
    assert again == [path.stat().st_size]  # answered at once, no piece sent


def test_a_shapefile_travels_with_its_parts(tmp_path):
    shp = tmp_path / "roads.shp"
    for suffix in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
        shp.with_suffix(suffix).write_bytes(b"x")
    assert sorted(p.suffix for p in sidecars(shp)) == [".cpg", ".dbf", ".prj", ".shx"]


def test_remote_finetune_sends_rasters_and_labels_and_lists_the_model(remote, backend_outputs,
                                                                      tmp_path, monkeypatch):
    from qgis.core import QgsVectorLayer

    plugin, state = remote
    raster = QgsRasterLayer(str(backend_outputs / "scene.tif"), "scene")
    labels = QgsVectorLayer(str(backend_outputs / "labels.gpkg"), "labels", "ogr")
    QgsProject.instance().addMapLayers([raster, labels])
    assert plugin.connect(start=False)
    dock = plugin.dock
    dock.raster_combo.setLayer(raster)
    dock.labels_combo.setLayer(labels)
    dock.field_combo.setField("class")
    dock.model_name_edit.setText("remote-model")
    dock.config_combo.setCurrentIndex(dock.config_combo.findData("config:tiny"))
    dock.epochs_spin.setValue(1)
    monkeypatch.setattr(plugin, "confirm", lambda text: True)
    task = plugin.finetune_current()
    wait_for(task, timeout=600)
    assert task.info["state"] == "succeeded", task.error
    assert [set(r) for r in task.params["rasters"]] == [{"file"}]
    assert set(task.params["labels"]) == {"file"}
    job = plugin.client.job(task.job_id)
    assert Path(job["params"]["out"]).parent.parent == state / "outputs"
    names = [dock.model_combo.itemText(i) for i in range(dock.model_combo.count())]
    assert "remote-model" in names
