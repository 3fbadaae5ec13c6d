"""Uploads over HTTP on a real server: one request or resumable pieces, checked by SHA-256,
content the server has already taken at once, and jobs naming `{"file": ID}`."""

from __future__ import annotations

import hashlib
import socket
import time
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pytest

from .conftest import Server


def _post(server: Server, data: bytes, name: str, **headers: str):
    return server.client().post("/files", content=data, headers={
        "X-Filename": name, "Content-Type": "application/octet-stream", **headers})


def test_a_file_in_one_request_is_stored_by_its_hash(server: Server, small_raster):
    data = small_raster.read_bytes()
    r = _post(server, data, "small.tif")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["size"] == len(data)
    assert body["complete"] and body["id"]
    blob = server.state_dir / "uploads" / "blobs" / body["sha256"] / "small.tif"
    assert blob.read_bytes() == data
    again = _post(server, b"", "copy.tif", **{"X-Sha256": body["sha256"],
                                             "Content-Range": f"bytes */{len(data)}"})
    assert again.status_code == 200 and again.json()["complete"]  # known: no bytes sent
    assert again.json()["id"] != body["id"]


def test_an_upload_in_pieces_resumes_after_a_broken_connection(server: Server):
    data = bytes(range(256)) * 4096  # 1 MiB
    sha = hashlib.sha256(data).hexdigest()
    r = _post(server, b"", "pieces.bin", **{"X-Sha256": sha, "Content-Range": f"bytes */{len(data)}"})
    assert r.status_code == 202 and r.json()["received"] == 0
    upload_id = r.json()["id"]
    _cut_put(server, upload_id, data, 0, 300_000)  # the connection breaks after 300 kB
    state = server.client().get(f"/files/{upload_id}").json()
    assert state["received"] == 300_000 and not state["complete"]
    c = server.client()
    wrong = c.put(f"/files/{upload_id}", content=data[:10],
                  headers={"Content-Range": f"bytes 0-9/{len(data)}"})
    assert wrong.status_code == 409 and "send from byte 300000" in wrong.json()["detail"]
    rest = c.put(f"/files/{upload_id}", content=data[300_000:],
                 headers={"Content-Range": f"bytes 300000-{len(data) - 1}/{len(data)}"})
    assert rest.status_code == 201 and rest.json()["sha256"] == sha


def _cut_put(server: Server, upload_id: str, data: bytes, start: int, sent: int) -> None:
    """A PUT of the rest of the file whose connection is cut after `sent` bytes."""
    url = urlparse(server.url)
    with socket.create_connection((url.hostname, url.port)) as sock:
        head = (f"PUT /files/{upload_id} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
                f"Authorization: Bearer {server.info['token']}\r\n"
                f"Content-Range: bytes {start}-{len(data) - 1}/{len(data)}\r\n"
                f"Content-Length: {len(data) - start}\r\n\r\n")
        sock.sendall(head.encode() + data[start:start + sent])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.client().get(f"/files/{upload_id}").json()["received"] == start + sent:
            return
        time.sleep(0.05)


def test_a_stalled_body_is_kept_as_a_broken_connection(tmp_path):
    """A client that stops sending (a half-open link) does not hold the upload forever."""
    server = Server(tmp_path / "state", plugins=False)
    server.env["GFM_UPLOAD_IDLE_S"] = "1"
    try:
        server.start()
        data = b"0123456789" * 1000
        r = _post(server, b"", "stall.bin", **{"Content-Range": f"bytes */{len(data)}"})
        upload_id = r.json()["id"]
        url = urlparse(server.url)
        with socket.create_connection((url.hostname, url.port), timeout=20) as sock:
            sock.sendall((f"PUT /files/{upload_id} HTTP/1.1\r\nHost: {url.hostname}\r\n"
                          f"Authorization: Bearer {server.info['token']}\r\n"
                          f"Content-Range: bytes 0-{len(data) - 1}/{len(data)}\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n").encode() + data[:4000])
            answer = b""  # the server answers after the idle time
            while b'"received"' not in answer:
                answer += sock.recv(4096)
        answer = answer.decode()
        assert " 202 " in answer.splitlines()[0] and '"received":4000' in answer
    finally:
        server.close()


def test_a_wrong_hash_is_refused_and_nothing_is_kept(server: Server):
    r = _post(server, b"some bytes", "bad.bin", **{"X-Sha256": "0" * 64})
    assert r.status_code == 400 and "SHA-256" in r.json()["detail"]
    assert not (server.state_dir / "uploads" / "blobs" / ("0" * 64)).exists()
    assert not any((server.state_dir / "uploads" / "partial").iterdir())


def test_a_job_names_an_uploaded_raster_and_matches_a_local_run(server: Server, small_raster,
                                                                tmp_path):
    upload = _post(server, small_raster.read_bytes(), "scene.tif").json()
    remote = server.submit("classify", raster={"file": upload["id"]}, model="tiny",
                           out=str(tmp_path / "remote"), device="cpu")
    local = server.submit("classify", raster=str(small_raster), model="tiny",
                          out=str(tmp_path / "local"), device="cpu")
    assert server.wait(remote["id"])["state"] == "succeeded"
    assert server.wait(local["id"])["state"] == "succeeded"
    got = server.client().get(f"/jobs/{remote['id']}/files/classes.tif").content
    assert got == (tmp_path / "local" / "classes.tif").read_bytes()  # bit for bit


def test_a_zip_reaches_the_job_unpacked_with_its_sidecars(server: Server, small_raster, tmp_path):
    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(small_raster, "scene/scene.tif")
        zf.writestr("scene/scene.tif.aux.xml", "<PAMDataset/>")
    upload = _post(server, archive.read_bytes(), "scene.zip").json()
    job = server.submit("classify", raster={"file": upload["id"]}, model="tiny",
                        out=str(tmp_path / "zipped"), device="cpu")
    path = Path(job["params"]["raster"])
    assert path.name == "scene.tif" and path.with_name("scene.tif.aux.xml").exists()
    assert server.wait(job["id"])["state"] == "succeeded"


def test_unknown_or_unfinished_uploads_are_refused_naming_the_field(server: Server, tmp_path):
    r = server.client().post("/jobs", json={"type": "classify", "params": {
        "raster": {"file": "0" * 32}, "model": "tiny", "out": str(tmp_path / "x")}})
    assert r.status_code == 400 and r.json()["detail"].startswith("params.raster")
    part = _post(server, b"", "half.tif", **{"Content-Range": "bytes */100"}).json()
    r = server.client().post("/jobs", json={"type": "classify", "params": {
        "raster": {"file": part["id"]}, "model": "tiny", "out": str(tmp_path / "y")}})
    assert r.status_code == 400 and "not complete" in r.json()["detail"]


@pytest.mark.parametrize("name", ["", "..", "/"])
def test_a_bad_file_name_is_a_400(server: Server, name):
    r = server.client().post("/files", content=b"x", headers={"X-Filename": name})
    assert r.status_code == 400


def test_uploads_beyond_the_limit_are_413(start_server, tmp_path):
    small = start_server(tmp_path / "limited", "--max-upload-gb", "0.000001")  # about 1 kB
    r = _post(small, b"x" * 5000, "big.bin")
    assert r.status_code == 413 and "at most" in r.json()["detail"]


def test_a_client_without_the_servers_disk_names_a_new_output_folder(server: Server, small_raster):
    upload = _post(server, small_raster.read_bytes(), "scene.tif").json()
    job = server.submit("classify", raster={"file": upload["id"]}, model="tiny",
                        out={"output": "scene results"}, device="cpu")
    out = Path(job["params"]["out"])
    assert out.parent.parent == server.state_dir / "outputs" and out.name == "scene_results"
    assert server.wait(job["id"])["state"] == "succeeded"
    names = {f["name"] for f in server.client().get(f"/jobs/{job['id']}/files").json()["files"]}
    assert "classes.tif" in names


def test_a_raster_url_is_read_over_http_where_it_lies(server: Server, small_raster, tmp_path):
    """An https:// COG need not travel: GDAL reads it window by window (here from a real
    HTTP server on loopback), and the result is the local file's."""
    from tests.backend.weights.file_server import FileServer

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "scene.tif").write_bytes(small_raster.read_bytes())
    with FileServer(tmp_path / "www") as web:
        job = server.submit("classify", raster=web.url("scene.tif"), model="tiny",
                            out=str(tmp_path / "from-url"), device="cpu")
        assert job["params"]["raster"].startswith("/vsicurl?url=http")
        assert server.wait(job["id"])["state"] == "succeeded"
        assert any(r and r.startswith("bytes=") for _, r in web.served.requests)  # ranges
    local = server.submit("classify", raster=str(small_raster), model="tiny",
                          out=str(tmp_path / "from-file"), device="cpu")
    assert server.wait(local["id"])["state"] == "succeeded"
    assert (tmp_path / "from-url" / "classes.tif").read_bytes() == \
        (tmp_path / "from-file" / "classes.tif").read_bytes()
    r = server.client().post("/jobs", json={"type": "classify", "params": {
        "raster": web.url("gone.tif"), "model": "tiny", "out": str(tmp_path / "gone")}})
    assert r.status_code == 400 and "params.raster" in r.json()["detail"]


def test_a_users_uploads_together_stay_under_the_quota(start_server, tmp_path):
    quota = start_server(tmp_path / "quota", "--user-quota-gb", str(10_000 / 2**30))  # 10 kB
    first = _post(quota, b"a" * 6000, "a.bin")
    assert first.status_code == 201
    over = _post(quota, b"b" * 6000, "b.bin")
    assert over.status_code == 413 and "per user" in over.json()["detail"]
    c = quota.client()
    assert c.delete(f"/files/{first.json()['id']}").status_code == 200
    assert c.get(f"/files/{first.json()['id']}").status_code == 404
    assert _post(quota, b"b" * 6000, "b.bin").status_code == 201
