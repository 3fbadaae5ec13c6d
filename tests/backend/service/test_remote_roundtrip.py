"""The whole remote loop with no path in common: a server keeping to its data root, a
client folder elsewhere; upload a raster and labels, fine-tune, classify, download, and
the downloaded classes.tif is a local run's, bit for bit."""

from __future__ import annotations

import shutil

from gfm_backend.tasks.classify import ClassifyParams, classify

from .conftest import Server


def _upload(client, path):
    r = client.post("/files", content=path.read_bytes(), headers={"X-Filename": path.name})
    assert r.status_code == 201, r.text
    return {"file": r.json()["id"]}


def test_upload_finetune_classify_download(start_server, scene_files, tmp_path):
    laptop = tmp_path / "laptop"  # the client's files: the server may not read them
    laptop.mkdir()
    for key in ("raster", "labels"):
        shutil.copy(scene_files[key], laptop / scene_files[key].name)
    raster, labels = laptop / scene_files["raster"].name, laptop / scene_files["labels"].name
    (tmp_path / "server-data").mkdir()
    server: Server = start_server(tmp_path / "server-state", "--data-root",
                                  str(tmp_path / "server-data"))
    c = server.client()
    by_path = c.post("/jobs", json={"type": "classify", "params": {
        "raster": str(raster), "model": "x", "out": {"output": "x"}}})
    assert by_path.status_code == 400  # the laptop's path means nothing there
    train = server.submit("finetune", rasters=[_upload(c, raster)], labels=_upload(c, labels),
                          class_field="class", out={"output": "roof-model"}, config="tiny",
                          device="cpu", epochs=1, chips=8, batch_size=4, onnx=False)
    trained = server.wait(train["id"], timeout=300)
    assert trained["state"] == "succeeded", trained["message"]
    model = trained["params"]["out"]
    run = server.submit("classify", raster=_upload(c, raster), model=model,
                        out={"output": "scene"}, device="cpu")
    assert server.wait(run["id"])["state"] == "succeeded"
    files = {f["name"]: f for f in c.get(f"/jobs/{run['id']}/files").json()["files"]}
    downloaded = laptop / "classes.tif"
    downloaded.write_bytes(c.get(f"/jobs/{run['id']}/files/classes.tif").content)
    classify(ClassifyParams(raster, model, tmp_path / "local-run", device="cpu"))
    assert downloaded.read_bytes() == (tmp_path / "local-run" / "classes.tif").read_bytes()
    assert files["classes.tif"]["size"] == downloaded.stat().st_size
