"""The Jobs list, the report and the results on a real backend: jobs started elsewhere
appear, a stopped backend turns the status red and a restarted one is found again, and a
job's files come through the API (resuming a broken download)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.gui import QgsMessageBar

from gfm_plugin.client import BackendClient, BackendError, Connection
from gfm_plugin.messages import Messages
from gfm_plugin.report_view import report_html
from gfm_plugin.transfer import fetch_resumable
from tests.backend.weights.file_server import FileServer


def classified_job(client: BackendClient, backend_outputs: Path, out: Path) -> dict:
    job_id = client.submit("classify", {"raster": str(backend_outputs / "scene.tif"),
                                        "model": "scene-model", "out": str(out)})
    return client.wait(job_id, poll_s=0.1, timeout_s=120)


def test_jobs_started_elsewhere_appear_and_follow(plugin, backend_outputs, tmp_path):
    assert plugin.connect(start=False)
    plugin.check_backend()
    before = plugin.dock.jobs.topLevelItemCount()
    assert before == len(plugin.client.jobs())
    job = classified_job(plugin.client, backend_outputs, tmp_path / "elsewhere")
    plugin.check_backend()
    assert plugin.dock.jobs.topLevelItemCount() == before + 1
    item = plugin.dock.jobs.topLevelItem(0)
    assert item.text(1) == "succeeded" and job["id"] == item.data(0, 256)


def test_a_dead_backend_turns_the_status_red_and_a_live_one_is_found_again(plugin):
    assert plugin.connect(start=False)
    live = plugin.client.connection.url
    plugin.client = BackendClient(Connection("http://127.0.0.1:9", "t"), timeout=2)
    plugin.settings.mode = "remote"  # nothing to find again: the status says so
    plugin.check_backend()
    assert plugin.client is None and "not available" in plugin.dock.status.text()
    assert "b00020" in plugin.dock.status.styleSheet()
    plugin.settings.mode = "local"  # the local backend's server.json names the live one
    plugin.check_backend()
    assert plugin.client is not None and plugin.client.connection.url == live
    assert plugin.dock.status.text().startswith("connected")


def test_a_jobs_files_are_listed_and_downloaded_through_the_api(plugin, backend_outputs, tmp_path):
    assert plugin.connect(start=False)
    job = classified_job(plugin.client, backend_outputs, tmp_path / "served")
    files = {f["name"]: f for f in plugin.client.job_files(job["id"])}
    entry = files["classes.tif"]
    got = plugin.client.download(job["id"], entry, tmp_path / "here" / "classes.tif")
    assert hashlib.sha256(got.read_bytes()).hexdigest() == entry["sha256"]
    assert not (tmp_path / "here" / "classes.tif.partial").exists()
    assert b"built-up" in plugin.client.file_bytes(job["id"], "report.json")
    with pytest.raises(BackendError, match="no file"):
        plugin.client.file_bytes(job["id"], "../../server.json")


def test_a_broken_download_resumes_and_a_damaged_one_is_deleted(tmp_path):
    import urllib.request

    root = tmp_path / "served"
    root.mkdir()
    data = bytes(range(256)) * 8000
    (root / "big.bin").write_bytes(data)
    with FileServer(root) as server:
        served = server.served
        served.cut_after["big.bin"] = 300_000

        def open_from(start: int):
            headers = {"Range": f"bytes={start}-"} if start else {}
            return urllib.request.urlopen(urllib.request.Request(server.url("big.bin"),
                                                                 headers=headers))

        sha = hashlib.sha256(data).hexdigest()
        dest = fetch_resumable(open_from, tmp_path / "big.bin", len(data), sha)
        assert dest.read_bytes() == data
        assert [r for _, r in served.requests] == [None, "bytes=300000-"]
        (tmp_path / "mine.bin").write_bytes(b"the analyst's")  # another file: never replaced
        with pytest.raises(BackendError, match="not replaced"):
            fetch_resumable(open_from, tmp_path / "mine.bin", len(data), sha)
        with pytest.raises(BackendError, match="damaged"):
            fetch_resumable(open_from, tmp_path / "other.bin", len(data), "0" * 64)
        assert not list(tmp_path.glob("other.bin*"))


def test_the_report_says_no_validation_pixels_instead_of_zero():
    job = {"type": "finetune", "state": "succeeded", "message": "done",
           "timings": {"run_s": 12.5},
           "outputs": {"validation": {"mean_iou": 0.5, "overall_accuracy": 0.9,
                                      "iou": {"Road": None, "Water": 0.5}},
                       "warnings": ["pixel size 2 m, model 0.5 m"]}}
    text = report_html(job)
    assert "Road</td><td align='right'>n/a (no validation polygons)" in text
    assert "mIoU 0.50" in text and "pixel size 2 m" in text and "12.5 s" in text


def test_the_report_of_change_jobs_gives_f1_and_changed_regions():
    trained = {"type": "finetune-change", "state": "succeeded", "message": "done",
               "outputs": {"validation": {"mean_iou": 0.7, "iou": {"no change": 0.98}},
                           "change": {"f1": 0.81, "precision": 0.9, "recall": None}}}
    assert "change: f1 0.81, precision 0.90, recall n/a" in report_html(trained)
    detected = {"type": "detect-change", "state": "succeeded", "message": "done",
                "outputs": {"polygon_count": 12, "class_area_m2": {"cleared": 25000.0}}}
    text = report_html(detected)
    assert "12 changed regions" in text and "cleared 2.50 ha" in text


def test_errors_replace_each_other_instead_of_piling_up(qgis_app):
    bar = QgsMessageBar()

    class Iface:
        def messageBar(self):  # noqa: N802 (QGIS's name)
            return bar

    msg = Messages(Iface())
    for n in range(3):
        msg.error(f"problem {n}")
    msg.info("something else")
    critical = [i for i in bar.items() if i.level() == 2]
    assert [i.text() for i in critical] == ["problem 2"] and len(bar.items()) == 2


def test_finetune_takes_the_checked_rasters(plugin, backend_outputs, tmp_path, monkeypatch):
    from osgeo import gdal

    copy = tmp_path / "second.tif"
    gdal.Translate(str(copy), str(backend_outputs / "scene.tif"))
    first = QgsRasterLayer(str(backend_outputs / "scene.tif"), "scene")
    second = QgsRasterLayer(str(copy), "second")
    QgsProject.instance().addMapLayers([first, second])
    labels = QgsProject.instance().addMapLayer(
        QgsVectorLayer(str(backend_outputs / "labels.gpkg"), "labels", "ogr"))
    dock = plugin.dock
    dock.raster_combo.setLayer(first)
    dock.labels_combo.setLayer(labels)
    dock.field_combo.setField("class")
    submitted: list[dict] = []
    monkeypatch.setattr(plugin, "run_job", lambda title, kind, params, done, **_kw: submitted.append(params))
    monkeypatch.setattr(plugin, "confirm", lambda text: True)
    dock.model_name_edit.setText("two-rasters")
    plugin.finetune_current()  # nothing checked: the Classify raster
    assert submitted[-1]["rasters"] == [str(backend_outputs / "scene.tif")]
    dock.training_rasters.setCheckedItems(["scene", "second"])
    plugin.finetune_current()
    assert sorted(submitted[-1]["rasters"]) == sorted([str(backend_outputs / "scene.tif"), str(copy)])
    assert Path(submitted[-1]["out"]).parent == Path(plugin.settings.models_dir)
