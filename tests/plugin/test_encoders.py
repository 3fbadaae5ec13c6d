"""The dock's encoder choice: the best installed weights first and by default; tiny on a
CPU-only backend with none; the params each choice sends."""

from __future__ import annotations

from gfm_plugin.encoders import choices

GFM = {"name": "gfm", "role": "student", "architecture": "Swin-B"}
TEACHER = {"name": "swin-b-22k", "role": "teacher", "architecture": "Swin-B"}


def test_pretrained_weights_come_first_and_are_the_default() -> None:
    items, default = choices([TEACHER, GFM], cpu_only=True)
    assert [data for _, data in items][:2] == ["weights:gfm", "weights:swin-b-22k"]
    assert items[0][0] == "GFM Swin-B, pretrained (gfm)" and default == 0
    assert items[1][0] == "Swin-B ImageNet-22k (swin-b-22k)"
    assert items[-2][0].startswith("Swin-B, random init (slow on a CPU")


def test_without_weights_a_cpu_backend_defaults_to_tiny() -> None:
    items, default = choices([], cpu_only=True)
    assert items[default][1] == "config:tiny"
    items, default = choices([], cpu_only=False)
    assert items[default][1] == "config:base"


def test_the_dock_sends_the_chosen_encoder(iface) -> None:
    from gfm_plugin.dock import GfmDock

    dock = GfmDock()
    dock.set_encoders([GFM], cpu_only=True)
    assert dock.encoder_params() == {"encoder": "gfm"}
    dock.config_combo.setCurrentIndex(dock.config_combo.findData("config:tiny"))
    dock.config_combo.activated.emit(dock.config_combo.currentIndex())  # as a click does
    assert dock.encoder_params() == {"config": "tiny"}
    dock.set_encoders([GFM, TEACHER], cpu_only=True)  # a refresh keeps the user's choice
    assert dock.encoder_params() == {"config": "tiny"}
