"""Where the network computes, and whether bf16 is native there, told without torch where
the machine already says so (`runtime/device.py`)."""

from __future__ import annotations

import sys

import pytest

from gfm_backend.runtime import device

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's device nodes")


def cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nflags\t\t: {flags}\n")
    return str(path)


@linux
def test_auto_is_the_cpu_where_no_gpu_is_attached(tmp_path, monkeypatch):
    node = tmp_path / "nvidiactl"
    monkeypatch.setattr(device, "GPU_NODES", (str(node),))
    assert device.surely_cpu("auto") and device.surely_cpu("cpu")
    node.touch()  # a GPU's driver: only torch can tell whether it computes there
    assert not device.surely_cpu("auto")
    assert not device.surely_cpu("cuda:1")


def test_a_cpu_listed_without_bf16_is_answered_without_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "CPUINFO", cpuinfo(tmp_path, "fpu sse2 avx2 fma"))
    monkeypatch.setattr(device, "cpu_has_amx", lambda: pytest.fail("asked torch"))
    assert device.native_bf16("cpu") is False
    assert device.native_bf16("cuda") is True


def test_a_cpu_listed_with_bf16_asks_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "CPUINFO", cpuinfo(tmp_path, "avx2 avx512f amx_bf16 amx_tile"))
    monkeypatch.setattr(device, "cpu_has_amx", lambda: True)  # as torch would answer
    assert device.native_bf16("cpu") is True
    monkeypatch.setattr(device, "CPUINFO", str(tmp_path / "missing"))  # not Linux: torch tells
    assert device.native_bf16("cpu") is True
