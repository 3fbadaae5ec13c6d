"""The HTTP surface of a real `gfm serve`: discovery, auth, Host check, input validation."""

from __future__ import annotations

import argparse
import json
import stat
import subprocess
import sys

import httpx
import pytest

from gfm_backend import __version__
from gfm_backend.cli import COMMANDS
from gfm_backend.service.jobs import PLANNED, JobTypeError, get_job_type

from .conftest import REPO, Server

AUTHED = [("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/jobs/abc"), ("GET", "/jobs/abc/log"),
          ("POST", "/jobs/abc/cancel"), ("POST", "/jobs/abc/resume"), ("GET", "/models"),
          ("GET", "/job-types"), ("GET", "/openapi.json")]


def test_server_json_is_private_and_says_how_to_connect(server: Server):
    path = server.state_dir / "server.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = json.loads(path.read_text())
    assert info["url"].startswith("http://127.0.0.1:") and info["port"] > 0
    assert info["pid"] == server.proc.pid and info["version"] == __version__
    assert len(info["token"]) >= 32
    assert not list(server.state_dir.glob(".server.json*"))  # no temporary left behind


def test_health_needs_no_token_and_describes_the_machine(server: Server):
    r = server.client(auth=False).get("/health")
    assert r.status_code == 200
    public = r.json()
    assert public["version"] == __version__ and public["status"] == "ok"
    assert {d["type"] for d in public["devices"]} >= {"cpu"}
    for private in ("disk_free_gb", "uptime_s", "torch"):  # nobody else's business
        assert private not in public
    assert all(set(d) == {"type", "name"} for d in public["devices"])
    health = server.client().get("/health").json()  # with the token: the whole picture
    assert health["disk_free_gb"] > 0 and health["uptime_s"] >= 0
    cpu = [d for d in health["devices"] if d["type"] == "cpu"]
    assert cpu and cpu[0]["cores"] >= 1
    for gpu in (d for d in health["devices"] if d["type"] == "cuda"):
        assert gpu["name"] and gpu["memory_total_mb"] > 0


@pytest.mark.parametrize("method,path", AUTHED)
def test_every_other_endpoint_needs_the_token(server: Server, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong-token"},
                    {"Authorization": f"Basic {server.info['token']}"},
                    {"Authorization": f"Bearer {server.info['token']}x"}):
        r = httpx.request(method, server.url + path, headers=headers, json={})
        assert r.status_code == 401, (headers, r.text)
        assert "token" in r.json()["detail"]


def test_host_header_must_name_this_service(server: Server):
    c = server.client()
    port = server.info["port"]
    for host in ("evil.example", f"attacker.test:{port}", "127.0.0.1.nip.io"):
        r = c.get("/health", headers={"Host": host})
        assert r.status_code == 400 and "Host header" in r.json()["detail"]
        assert c.get("/jobs", headers={"Host": host}).status_code == 400
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
        assert c.get("/jobs", headers={"Host": host}).status_code == 200, host


def test_bad_input_is_refused_before_queueing_and_names_the_field(server: Server, tmp_path,
                                                                   small_raster, tiny_model,
                                                                   scene_files):
    not_raster = tmp_path / "notes.tif"
    not_raster.write_text("this is not a GeoTIFF")
    no_package = tmp_path / "empty"
    no_package.mkdir()
    out = str(tmp_path / "out")
    ok = {"raster": str(small_raster), "model": str(tiny_model), "out": out}
    cases = [
        ({**ok, "raster": str(tmp_path / "missing.tif")}, "raster", "missing.tif"),
        ({**ok, "raster": str(not_raster)}, "raster", "notes.tif"),
        ({**ok, "raster": "scene.tif"}, "raster", "absolute path"),
        ({**ok, "model": "no-such-model"}, "model", "no-such-model"),
        ({**ok, "model": str(no_package)}, "model", "model.json"),
        ({**ok, "colour": "red"}, "colour", "unknown option"),
        ({"raster": str(small_raster), "out": out}, "model", "missing"),
        ({**ok, "batch_size": "eight"}, "batch_size", "integer"),
        ({**ok, "batch_size": 0}, "batch_size", "at least 1"),
        ({**ok, "device": "tpu"}, "device", "tpu"),
        ({**ok, "runtime": "tensorrt"}, "runtime",
         "torch, torch-bf16, torch-compiled, torch-compiled-int8, onnx"),
        ({**ok, "min_area": 1, "min_area_m2": 2}, "min_area_m2", "given twice"),
        ({**ok, "out": str(small_raster)}, "out", "not a folder"),
    ]
    c = server.client()
    before = c.get("/jobs").json()["counts"]
    for params, field, words in cases:
        r = c.post("/jobs", json={"type": "classify", "params": params})
        assert r.status_code == 400, (params, r.text)
        body = r.json()
        assert body["field"] == field and words in body["detail"], body
        assert "Traceback" not in body["detail"]
    r = c.post("/jobs", json={"type": "finetune", "params": {
        "rasters": [str(scene_files["raster"])], "labels": str(scene_files["labels"]),
        "class_field": "landcover", "out": out}})
    assert r.status_code == 400 and "no field 'landcover'" in r.json()["detail"]
    r = c.post("/jobs", json={"type": "finetune", "params": {
        "raster": str(scene_files["raster"]), "labels": str(scene_files["raster"]), "out": out}})
    assert r.status_code == 400 and r.json()["field"] == "labels"
    assert c.get("/jobs").json()["counts"] == before


def test_planned_types_say_they_are_not_available(monkeypatch):
    monkeypatch.setitem(PLANNED, "segment-anything", "prompted segmentation")
    with pytest.raises(JobTypeError, match="not available in this version"):
        get_job_type("segment-anything")
    with pytest.raises(JobTypeError, match="unknown job type 'paint'"):
        get_job_type("paint")


def test_unknown_type_and_malformed_bodies_are_4xx(server: Server):
    c = server.client()
    r = c.post("/jobs", json={"type": "paint", "params": {}})
    assert r.status_code == 400 and "classify" in r.json()["detail"]
    for body in ('{"type": ', '[]', '{"params": {}}', '{"type": "classify", "params": []}',
                 '{"type": "classify", "params": {"batch_size": NaN, "simplify": Infinity}}'):
        r = c.post("/jobs", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 422) and isinstance(r.json()["detail"], str), body
    assert c.get("/jobs/does-not-exist").status_code == 404
    assert c.post("/jobs/does-not-exist/cancel").status_code == 404


def test_job_types_and_models_are_listed(server: Server, tiny_model):
    c = server.client()
    types = c.get("/job-types").json()
    names = {t["type"] for t in types["types"]}
    assert {"classify", "finetune", "export", "geopile", "pretrain"} <= names
    assert types["not_available"] == {}
    classify = next(t for t in types["types"] if t["type"] == "classify")
    assert {p["name"] for p in classify["params"]} >= {"raster", "model", "out", "min_area"}
    models = c.get("/models").json()["models"]
    tiny = next(m for m in models if m["name"] == "tiny")
    assert tiny["model"] == json.loads((tiny_model / "model.json").read_text())
    assert "model.safetensors" in tiny["files"] and tiny["has_onnx"]


def _cli_options(command: str, subcommand: str | None) -> dict[str, object]:
    sub = argparse.ArgumentParser().add_subparsers()
    COMMANDS[command][0](sub)
    parser = sub.choices[command]
    if subcommand:
        parser = next(a for a in parser._actions
                      if isinstance(a, argparse._SubParsersAction)).choices[subcommand]
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            name = action.option_strings[0].lstrip("-").replace("-", "_")  # [1:]: aliases
        else:
            name = (action.metavar or action.dest).lower()
        default = action.default
        out[name] = str(default) if default is not None and not isinstance(default, bool | int | float) \
            else default
    return out


@pytest.mark.parametrize("command", ["classify", "finetune", "export", "geopile build", "pretrain",
                                     "weights get", "weights import"])
def test_job_params_are_the_cli_options(command):
    """Same names and defaults as the `gfm` command, so a new CLI option is not forgotten."""
    command, _, subcommand = command.partition(" ")
    cli = _cli_options(command, subcommand or None)
    job_type = {"get": "weights", "import": "weights-import"}.get(subcommand, command)
    service = get_job_type(job_type).params.exposed()
    renamed = {"raster": "rasters"} if command == "finetune" else {}
    assert {renamed.get(k, k) for k in cli} == set(service)
    for name, default in cli.items():
        field = service[renamed.get(name, name)]
        if not field.is_required():
            assert field.default == default, name


def test_gfm_jobs_lists_jobs_from_the_command_line(server: Server, tmp_path):
    job = server.submit("steps", out=str(tmp_path / "steps"), steps=1, step_s=0)
    server.wait(job["id"])
    env = server.env
    r = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "jobs", "--state-dir",
                        str(server.state_dir)], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    listing = json.loads(r.stdout)
    assert listing["server"] == server.url
    row = next(j for j in listing["jobs"] if j["id"] == job["id"])
    assert row["state"] == "succeeded" and row["type"] == "steps"
    r = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "jobs", job["id"], "--state-dir",
                        str(server.state_dir)], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["log_tail"]


def test_a_second_server_on_the_same_state_folder_refuses(server: Server):
    r = subprocess.run([sys.executable, "-m", "gfm_backend.cli", "serve", "--state-dir",
                        str(server.state_dir)], capture_output=True, text=True, env=server.env,
                       cwd=REPO, timeout=60)
    assert r.returncode == 2
    assert "already running" in r.stderr and server.url in r.stderr
    assert "Traceback" not in r.stderr


def test_listening_beyond_loopback_warns(start_server, tmp_path):
    (tmp_path / "data").mkdir()
    s = start_server(tmp_path / "wide", "--host", "0.0.0.0", "--data-root", str(tmp_path / "data"),
                     plugins=False)
    assert s.url.startswith("http://127.0.0.1:")
    assert "not only on this computer" in s.log()
    assert s.client().get("/jobs").status_code == 200


def test_post_jobs_body_is_a_union_of_the_job_types_params(server: Server):
    schema = server.client().get("/openapi.json").json()
    components = schema["components"]["schemas"]
    body = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/JobRequest")
    union = components["JobRequest"]
    assert union["discriminator"]["propertyName"] == "type"
    types = {}
    for variant in union["oneOf"]:
        job = components[variant["$ref"].rsplit("/", 1)[1]]
        params = components[job["properties"]["params"]["$ref"].rsplit("/", 1)[1]]
        types[job["properties"]["type"]["const"]] = params
    assert {"classify", "finetune", "export", "geopile", "pretrain", "steps"} <= set(types)
    listed = {t["type"]: t for t in server.client().get("/job-types").json()["types"]}
    for name, params in types.items():  # the schema and GET /job-types say the same
        described = {p["name"]: p for p in listed[name]["params"]}
        assert set(params["properties"]) == set(described), name
        for field, spec in params["properties"].items():
            if "maximum" in spec:
                assert described[field]["maximum"] == spec["maximum"], (name, field)
            if "default" in spec:
                assert described[field]["default"] == spec["default"], (name, field)
    assert types["classify"]["properties"]["batch_size"]["minimum"] == 1
    assert "lr" not in types["finetune"]["properties"]  # internal knobs are not offered


def test_the_plugins_copy_of_the_declarations_is_in_step():
    """gfm_plugin/processing/job_params.json is what the models declare (`make job-params`)."""
    from scripts.write_job_params import TARGET, render

    assert TARGET.read_text(encoding="utf-8") == render(), "run `make job-params`"
