"""A job's files over HTTP: listed with sizes and hashes, fetched whole or by range."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from .conftest import Server


@pytest.fixture(scope="module")
def classified(server: Server, small_raster, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("files") / "classified"
    job = server.submit("classify", raster=str(small_raster), model="tiny", out=str(out),
                        device="cpu")
    assert server.wait(job["id"])["state"] == "succeeded"
    (out / "notes.txt").write_text("the analyst's own file")  # never listed nor served
    return job["id"], out


def test_a_jobs_files_are_listed_with_size_and_sha256(server: Server, classified):
    job_id, out = classified
    listing = server.client().get(f"/jobs/{job_id}/files").json()
    names = [f["name"] for f in listing["files"]]
    assert {"classes.tif", "confidence.tif", "polygons.gpkg", "report.json"} <= set(names)
    assert "notes.txt" not in names and ".gfm-output.json" not in names
    for entry in listing["files"]:
        data = (out / entry["name"]).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_file_is_served_whole_and_by_range(server: Server, classified):
    job_id, out = classified
    c = server.client()
    whole = c.get(f"/jobs/{job_id}/files/classes.tif")
    assert whole.status_code == 200 and whole.content == (out / "classes.tif").read_bytes()
    part = c.get(f"/jobs/{job_id}/files/classes.tif", headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == whole.content[100:]
    assert part.headers["content-range"].endswith(f"/{len(whole.content)}")
    report = c.get(f"/jobs/{job_id}/files/report.json")
    assert report.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("name", ["notes.txt", "../classified/notes.txt", "%2e%2e/%2e%2e/etc/passwd",
                                  ".gfm-output.json", "nothing.tif"])
def test_only_listed_files_are_served(server: Server, classified, name):
    job_id, _ = classified
    r = server.client().get(f"/jobs/{job_id}/files/{name}")
    assert r.status_code == 404, r.text
    assert "notes" not in r.text or "no file" in r.json()["detail"]


def test_files_of_an_unfinished_or_unknown_job_are_refused(server: Server, tmp_path):
    job = server.submit("steps", out=str(tmp_path / "steps"), steps=50, step_s=0.1, lane="cpu")
    r = server.client().get(f"/jobs/{job['id']}/files")
    assert r.status_code == 409 and "only a succeeded job" in r.json()["detail"]
    server.client().post(f"/jobs/{job['id']}/cancel")
    assert server.client().get("/jobs/nope/files").status_code == 404


def test_a_model_packages_report_and_plots_come_over_http(server: Server, scene_files, tmp_path):
    out = tmp_path / "model"
    job = server.submit("finetune", raster=str(scene_files["raster"]),
                        labels=str(scene_files["labels"]), class_field="class", out=str(out),
                        config="tiny", device="cpu", epochs=1, chips=8, batch_size=4, onnx=False)
    assert server.wait(job["id"])["state"] == "succeeded"
    c = server.client()
    names = {f["name"] for f in c.get(f"/jobs/{job['id']}/files").json()["files"]}
    assert {"model.json", "report.json", "training_curve.png", "confusion_matrix.png"} <= names
    png = c.get(f"/jobs/{job['id']}/files/confusion_matrix.png")
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
