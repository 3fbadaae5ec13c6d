"""The `gfm` command as a user runs it: clear messages, no tracebacks, JSON on success."""

from __future__ import annotations

import json
import subprocess
import sys


def gfm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gfm_backend.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_missing_raster_is_a_clear_error(tmp_path):
    r = gfm("classify", str(tmp_path / "nowhere.tif"), "--model", str(tmp_path), "--out",
            str(tmp_path / "o"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "nowhere.tif" in r.stderr or "model.json" in r.stderr


def test_bad_labels_name_the_field(tmp_path, scene_files):
    r = gfm("--quiet", "finetune", str(scene_files["raster"]), "--labels",
            str(scene_files["labels"]), "--class-field", "nope", "--out", str(tmp_path / "m"),
            "--config", "tiny", "--device", "cpu")
    assert r.returncode == 2, r.stderr
    assert "no field 'nope'" in r.stderr and "class" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "m").exists()


def test_classify_prints_report(tmp_path, scene_files, tiny_model):
    r = gfm("--quiet", "classify", str(scene_files["raster"]), "--model", str(tiny_model),
            "--out", str(tmp_path / "o"), "--device", "cpu", "--runtime", "onnx")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["predictor"].startswith("onnxruntime")
    assert (tmp_path / "o" / "classes.tif").exists()


def test_export_writes_onnx(tmp_path, tiny_model):
    r = gfm("--quiet", "export", str(tiny_model), "--out", str(tmp_path / "m.onnx"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.onnx").stat().st_size > 10_000


def test_sigterm_leaves_no_partial_outputs(tmp_path, scene_files, tiny_model):
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "gfm_backend.cli", "--quiet", "finetune", str(scene_files["raster"]),
         "--labels", str(scene_files["labels"]), "--class-field", "class", "--out",
         str(tmp_path / "m"), "--config", "tiny", "--device", "cpu", "--epochs", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)  # well into loading or training
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not (tmp_path / "m").exists()
    assert not list(tmp_path.glob(".m.partial-*"))


def test_output_folder_rule_on_the_command_line(tmp_path, scene_files, tiny_model):
    """A previous result needs --overwrite; someone's files and the model folder are refused."""
    out = tmp_path / "o"
    args = ("--quiet", "classify", str(scene_files["raster"]), "--model", str(tiny_model),
            "--device", "cpu", "--runtime", "onnx", "--no-polygons")
    assert gfm(*args, "--out", str(out)).returncode == 0
    first = (out / "report.json").read_bytes()
    again = gfm(*args, "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr, again.stderr
    assert (out / "report.json").read_bytes() == first
    assert gfm(*args, "--out", str(out), "--overwrite").returncode == 0
    (out / "notes.txt").write_text("mine")
    foreign = gfm(*args, "--out", str(out), "--overwrite")
    assert foreign.returncode == 2 and "notes.txt" in foreign.stderr
    model_report = (tiny_model / "report.json").read_bytes()
    into_model = gfm(*args, "--out", str(tiny_model), "--overwrite")
    assert into_model.returncode == 2 and "Traceback" not in into_model.stderr
    assert (tiny_model / "report.json").read_bytes() == model_report
    bounds = gfm(*args, "--out", str(tmp_path / "p"), "--min-area", "1e308")
    assert bounds.returncode == 2 and "--min-area" in bounds.stderr, bounds.stderr


def test_finetune_at_another_tile_size(tmp_path, scene_files):
    r = gfm("--quiet", "finetune", str(scene_files["raster"]), "--labels", str(scene_files["labels"]),
            "--class-field", "class", "--out", str(tmp_path / "m"), "--config", "tiny", "--device",
            "cpu", "--epochs", "1", "--chips", "8", "--tile-size", "96", "--no-onnx")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m" / "model.json").read_text())["tile_size"] == 96
    bad = gfm("--quiet", "finetune", str(scene_files["raster"]), "--labels", str(scene_files["labels"]),
              "--out", str(tmp_path / "m2"), "--config", "tiny", "--tile-size", "100")
    assert bad.returncode == 2 and "multiple of 32" in bad.stderr, bad.stderr


def test_geopile_and_pretrain_share_the_declared_bounds(tmp_path, scene_files):
    pile = tmp_path / "pile"
    assert gfm("--quiet", "geopile", "build", str(scene_files["root"]), "--out", str(pile)).returncode == 0
    chip = gfm("--quiet", "geopile", "build", str(scene_files["root"]), "--out", str(tmp_path / "p2"),
               "--chip", str(10**9))
    assert chip.returncode == 2 and "--chip" in chip.stderr, chip.stderr
    seed = gfm("--quiet", "pretrain", str(pile), "--out", str(tmp_path / "run"), "--teacher", "none",
               "--config", "tiny", "--seed", "-1")
    assert seed.returncode == 2 and "--seed" in seed.stderr, seed.stderr
    inside = gfm("--quiet", "pretrain", str(pile), "--out", str(tmp_path), "--teacher", "none",
                 "--config", "tiny")
    assert inside.returncode == 2 and "inside" in inside.stderr, inside.stderr
    assert not (tmp_path / "run").exists()


def test_export_never_writes_over_another_file_of_the_package(tmp_path, tiny_model):
    weights = (tiny_model / "model.safetensors").read_bytes()
    r = gfm("--quiet", "export", str(tiny_model), "--out", str(tiny_model / "model.safetensors"),
            "--overwrite")
    assert r.returncode == 2 and "model package" in r.stderr, r.stderr
    assert (tiny_model / "model.safetensors").read_bytes() == weights
