"""The output-folder rule on real folders: what counts as ours, and what is never touched."""

from __future__ import annotations

import json

import pytest

from gfm_backend.errors import InputError
from gfm_backend.outputs import CLASSIFY, MODEL, check_output_dir, inspect, staged_output


def _finish(folder, kind, files):
    with staged_output(folder, kind, overwrite=True) as stage:
        for name in files:
            (stage / name).write_text(name)


def test_a_manifest_lists_exactly_what_is_ours(tmp_path):
    out = tmp_path / "result"
    _finish(out, CLASSIFY, ["classes.tif", "confidence.tif", "report.json"])  # no polygons
    (out / "confidence.tif.aux.xml").write_text("statistics QGIS added")  # side file of ours
    assert inspect(out).foreign == []
    (out / "polygons.qml").write_text("the user's own style")  # a name we could have written
    with pytest.raises(InputError, match="polygons.qml"):
        check_output_dir(out, CLASSIFY, overwrite=True)
    assert (out / "polygons.qml").read_text() == "the user's own style"


def test_a_users_picture_in_a_model_package_is_never_ours(tmp_path):
    legacy = tmp_path / "model"  # written before manifests: recognised by exact names
    legacy.mkdir()
    for name in ("model.json", "model.safetensors", "training_curve.png"):
        (legacy / name).write_text(name)
    assert inspect(legacy).kind is MODEL and inspect(legacy).foreign == []
    (legacy / "map.png").write_text("the user's map")
    with pytest.raises(InputError):
        check_output_dir(legacy, MODEL, overwrite=True)
    assert (legacy / "map.png").read_text() == "the user's map"


def test_replacing_keeps_nothing_stale_and_writes_the_manifest_last(tmp_path):
    out = tmp_path / "result"
    _finish(out, CLASSIFY, ["classes.tif", "polygons.gpkg", "report.json"])
    _finish(out, CLASSIFY, ["classes.tif", "report.json"])
    assert sorted(p.name for p in out.iterdir()) == [".gfm-output.json", "classes.tif", "report.json"]
    assert json.loads((out / ".gfm-output.json").read_text())["files"] == ["classes.tif", "report.json"]
