"""The weights a remote backend fetches for itself: `weights` jobs, `GET /weights`, names in
job params, `DELETE /weights/{name}`; a real server, a real file server on loopback."""

from __future__ import annotations

import torch

from gfm_backend.models import CONFIGS

from ..models.checkpoint_files import write_22k_checkpoint, write_gfm_checkpoint
from ..weights.file_server import FileServer


def test_a_backend_fetches_lists_uses_and_removes_its_weights(start_server, tmp_path,
                                                             scene_files) -> None:
    published = tmp_path / "published"
    published.mkdir()
    write_gfm_checkpoint(published / "gfm.pth", CONFIGS["tiny"])
    write_22k_checkpoint(published / "teacher.pth", CONFIGS["tiny"].with_input(224, 7))
    torch.save({"model": {"layer1.0.conv1.weight": torch.zeros(8, 8, 3, 3),
                          "conv1.weight": torch.zeros(8, 3, 7, 7)}}, published / "resnet.pth")
    server = start_server()
    c = server.client()
    with FileServer(published) as files:
        size = (published / "gfm.pth").stat().st_size
        files.served.cut_after["gfm.pth"] = size // 2
        job = server.wait(server.submit("weights", source=files.url("gfm.pth"), name="gfm")["id"])
        assert job["state"] == "succeeded", job
        assert job["outputs"]["role"] == "student" and job["outputs"]["size"] == size
        bad = server.wait(server.submit("weights", source=files.url("resnet.pth"))["id"])
        assert bad["state"] == "failed" and "is a ResNet checkpoint" in bad["message"]
    listing = c.get("/weights").json()
    assert [w["name"] for w in listing["installed"]] == ["gfm"]
    assert {e["name"] for e in listing["catalog"]} >= {"gfm", "swin-b-22k"}

    params = {"rasters": [str(scene_files["raster"])], "labels": str(scene_files["labels"]),
              "out": str(tmp_path / "model"), "encoder": "gfm", "epochs": 1, "chips": 8}
    r = c.post("/jobs", json={"type": "finetune", "params": params})
    assert r.status_code == 201, r.text
    assert r.json()["params"]["encoder"] == listing["installed"][0]["path"]
    assert c.delete("/weights/gfm").status_code == 409  # the queued or running job uses it
    c.post(f"/jobs/{r.json()['id']}/cancel")
    server.wait(r.json()["id"])

    r = c.post("/jobs", json={"type": "finetune", "params": params | {"encoder": "gmf"}})
    assert r.status_code == 400 and "params.encoder: unknown weights 'gmf'" in r.json()["detail"]
    r = c.post("/jobs", json={"type": "weights", "params": {"source": "gfm", "sha256": "xyz"}})
    assert r.status_code == 400 and "params.sha256: must be a SHA-256" in r.json()["detail"]
    assert c.delete("/weights/gfm").status_code == 200
    assert c.delete("/weights/gfm").status_code == 404
    assert c.get("/weights").json()["installed"] == []
