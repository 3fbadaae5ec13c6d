"""The change jobs through a real server, with no path in common with the client: upload
both dates and the change polygons, fine-tune for changes, detect changes, download; and
pairs or models a change job cannot use are 400s naming the problem."""

from __future__ import annotations

import pytest
import rasterio

from gfm_backend.data.synthetic import write_polygons
from gfm_backend.data.synthetic_change import make_change_pair, patch_polygons, write_pair
from gfm_backend.tasks.change_detect import detect_change
from gfm_backend.tasks.params import DetectChangeParams

from .conftest import Server


@pytest.fixture(scope="module")
def laptop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("laptop")
    made = make_change_pair(256, count=8, patch_px=32)
    before, after = write_pair(made, folder)
    geoms, names = patch_polygons(made)
    labels = write_polygons(folder / "changes.gpkg", geoms, names, made.before.crs)
    return {"before": before, "after": after, "labels": labels}


def _upload(client, path):
    r = client.post("/files", content=path.read_bytes(), headers={"X-Filename": path.name})
    assert r.status_code == 201, r.text
    return {"file": r.json()["id"]}


def test_upload_finetune_change_detect_change_download(start_server, laptop, tmp_path):
    (tmp_path / "server-data").mkdir()
    server: Server = start_server(tmp_path / "state", "--data-root", str(tmp_path / "server-data"))
    c = server.client()
    before, after = _upload(c, laptop["before"]), _upload(c, laptop["after"])
    train = server.submit("finetune-change", before=before, after=after,
                          labels=_upload(c, laptop["labels"]), class_field="class",
                          out={"output": "change-model"}, config="tiny", device="cpu", epochs=1,
                          chips=8, batch_size=4, onnx=False)
    trained = server.wait(train["id"], timeout=300)
    assert trained["state"] == "succeeded", trained["message"]
    assert set(trained["outputs"]["change"]) == {"precision", "recall", "f1", "iou"}
    model = trained["params"]["out"]
    models = {m["name"]: m for m in c.get("/models").json()["models"]}
    assert any(m["model"]["task"] == "change_detection" for m in models.values())
    run = server.submit("detect-change", before=before, after=after, model=model,
                        out={"output": "changes"}, device="cpu")
    done = server.wait(run["id"])
    assert done["state"] == "succeeded", done["message"]
    names = {f["name"] for f in c.get(f"/jobs/{run['id']}/files").json()["files"]}
    assert {"change.tif", "confidence.tif", "polygons.gpkg", "report.json", "change.qml"} <= names
    downloaded = tmp_path / "change.tif"
    downloaded.write_bytes(c.get(f"/jobs/{run['id']}/files/change.tif").content)
    detect_change(DetectChangeParams(laptop["before"], laptop["after"], model=model,
                                     out=tmp_path / "local", device="cpu"))
    assert downloaded.read_bytes() == (tmp_path / "local" / "change.tif").read_bytes()


def test_a_pair_that_does_not_overlap_is_a_400_naming_both(server: Server, laptop, tmp_path):
    far = tmp_path / "far.tif"
    with rasterio.open(laptop["after"]) as src:
        profile = src.profile | {"transform": src.transform * rasterio.Affine.translation(5000, 0)}
        with rasterio.open(far, "w", **profile) as dst:
            dst.write(src.read())
    r = server.client().post("/jobs", json={"type": "finetune-change", "params": {
        "before": str(laptop["before"]), "after": str(far), "labels": str(laptop["labels"]),
        "out": str(tmp_path / "m")}})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["field"] == "after" and "do not overlap" in body["detail"]
    assert "before.tif" in body["detail"] and "far.tif" in body["detail"]


def test_a_classification_model_is_a_400_for_detect_change(server: Server, laptop, tmp_path):
    r = server.client().post("/jobs", json={"type": "detect-change", "params": {
        "before": str(laptop["before"]), "after": str(laptop["after"]), "model": "tiny",
        "out": str(tmp_path / "out")}})
    assert r.status_code == 400 and r.json()["field"] == "model"
    assert "not a change model" in r.json()["detail"]


def test_wrong_after_bands_are_a_400(server: Server, laptop, tmp_path):
    r = server.client().post("/jobs", json={"type": "finetune-change", "params": {
        "before": str(laptop["before"]), "after": str(laptop["after"]),
        "labels": str(laptop["labels"]), "after_bands": [1, 2, 9], "out": str(tmp_path / "m")}})
    assert r.status_code == 400 and r.json()["field"] == "after_bands"
    assert "no band 9" in r.json()["detail"]


def test_checking_a_change_job_before_queueing_never_loads_torch(laptop, tmp_path):
    """The checks run while the client waits for POST /jobs: importing the ML stack there
    took longer than the plugin waits (a first submit timed out)."""
    import subprocess
    import sys

    from gfm_backend.tasks.change_finetune import finetune_change
    from gfm_backend.tasks.params import FinetuneChangeParams

    model = tmp_path / "model"
    finetune_change(FinetuneChangeParams(
        before=laptop["before"], after=laptop["after"], labels=laptop["labels"], out=model,
        config="tiny", device="cpu", epochs=0, chips=4, no_onnx=True))
    code = (
        "import sys\n"
        "from gfm_backend.service.jobs import get_job_type\n"
        f"p = {{'before': {str(laptop['before'])!r}, 'after': {str(laptop['after'])!r}}}\n"
        f"get_job_type('detect-change').validate(p | {{'model': {str(model)!r}, "
        f"'out': {str(tmp_path / 'a')!r}}})\n"
        f"get_job_type('finetune-change').validate(p | {{'labels': {str(laptop['labels'])!r}, "
        f"'class_field': 'class', 'out': {str(tmp_path / 'b')!r}}})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
