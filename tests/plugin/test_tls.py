"""HTTPS between the plugin and a real `gfm serve --certfile --keyfile`: a self-signed
certificate is accepted only when its SHA-256 is pinned, and a wrong pin is refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from conftest import REPO, VENV_PY

from gfm_plugin.client import BackendClient, BackendError, Connection

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None or not VENV_PY.exists(),
                                reason="needs openssl and the backend's venv")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=gpu-box", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    state = root / "state"
    proc = subprocess.Popen([str(VENV_PY), "-m", "gfm_backend.cli", "serve", "--state-dir",
                             str(state), "--port", "0", "--certfile", str(cert), "--keyfile",
                             str(key)], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 60
    while not (state / "server.json").exists():
        assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
        time.sleep(0.1)
    time.sleep(0.3)
    yield json.loads((state / "server.json").read_text())
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)


def test_a_pinned_self_signed_certificate_is_accepted(tls_server):
    assert tls_server["url"].startswith("https://")
    client = BackendClient(Connection(tls_server["url"], tls_server["token"],
                                      tls_server["fingerprint"].lower()))
    assert client.health()["status"] == "ok"
    assert client.jobs() == []


def test_a_wrong_pin_or_no_pin_is_refused(tls_server):
    wrong = "AB" * 32
    with pytest.raises(BackendError, match="not the one pinned"):
        BackendClient(Connection(tls_server["url"], tls_server["token"], wrong)).health()
    with pytest.raises(BackendError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        BackendClient(Connection(tls_server["url"], tls_server["token"])).health()
