"""`--runtime auto`: which runtime it stands for on this machine, for this package and raster."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest

from gfm_backend.errors import Cancelled, GfmError
from gfm_backend.package import read_spec
from gfm_backend.runtime import compiled, device
from gfm_backend.runtime.choose import COMPILE_FROM_MPIX, choose_runtime
from gfm_backend.runtime.predictors import INT8_FILE, make_predictor


@pytest.fixture
def package(tiny_model, tmp_path):
    """A copy of the tiny package (its int8 file is added or removed per test)."""
    return shutil.copytree(tiny_model, tmp_path / "pkg")


@pytest.fixture
def bf16(monkeypatch, tmp_path):
    """A CPU with native bf16, a C++ compiler and an empty compiled-network cache."""
    monkeypatch.setenv(compiled.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(device, "native_bf16", lambda where: True)
    monkeypatch.setattr(compiled, "has_compiler", lambda: True)


def spec_of(package):
    return read_spec(package).for_inference()


def test_native_bf16_runs_bf16_on_small_rasters_and_compiles_for_large_ones(package, bf16,
                                                                           monkeypatch):
    spec = spec_of(package)
    assert choose_runtime(package, spec, "cpu", 2048 * 2048)[0] == "torch-bf16"
    large = int(COMPILE_FROM_MPIX * 1e6)
    monkeypatch.setattr(device, "cpu_has_amx", lambda: True)
    runtime, why = choose_runtime(package, spec, "cpu", large)
    assert runtime == "torch-compiled" and "megapixels" in why
    monkeypatch.setattr(device, "cpu_has_amx", lambda: False)  # AVX512-BF16 alone
    assert choose_runtime(package, spec, "cpu", large)[0] == "torch-compiled"  # tiny: narrow
    wide = dataclasses.replace(spec, encoder=spec.encoder | {"embed_dim": 128})  # as base
    runtime, why = choose_runtime(package, wide, "cpu", large)
    assert runtime == "torch-compiled-int8" and "without AMX" in why
    monkeypatch.setattr(compiled, "has_compiler", lambda: False)
    assert choose_runtime(package, spec, "cpu", large)[0] == "torch-bf16"


def test_the_choice_does_not_depend_on_the_cache(package, bf16):
    """A network compiled for a large raster does not change how a small one is classified."""
    spec = spec_of(package)
    cache = compiled.cache_dir()
    cache.mkdir(parents=True)
    (cache / f"gfm-{compiled.compiled_key(package, spec, 8, True)}.pt2").write_bytes(b"")
    assert choose_runtime(package, spec, "cpu", 64 * 64)[0] == "torch-bf16"


def test_without_native_bf16_int8_where_the_package_has_it(package, monkeypatch):
    monkeypatch.setattr(device, "native_bf16", lambda where: False)
    spec = spec_of(package)
    assert (package / INT8_FILE).is_file()  # fine-tuning writes it
    assert choose_runtime(package, spec, "cpu", None)[0] == "onnx-int8"
    other_tiles = read_spec(package).for_inference(384)
    assert choose_runtime(package, other_tiles, "cpu", None)[0] == "torch"
    (package / INT8_FILE).unlink()
    runtime, why = choose_runtime(package, spec, "cpu", None)
    assert runtime == "torch" and "no model.int8.onnx" in why


def test_the_predictor_says_what_auto_chose(package, bf16):
    predictor = make_predictor(package, spec_of(package), "auto", "cpu", pixels=256 * 256)
    assert predictor.description.endswith(
        "--runtime auto chose torch-bf16: native bf16; too small a raster to pay for "
        "compiling the network")
    assert "(bf16" in predictor.description


def test_a_failed_compile_leaves_the_job_on_bf16_and_a_cancel_stops_it(package, bf16,
                                                                       monkeypatch):
    def failing(*args, **kwargs):
        raise GfmError("compiling the network for --runtime torch-compiled failed")

    monkeypatch.setattr(compiled, "compiled_network", failing)
    large = int(COMPILE_FROM_MPIX * 1e6)
    predictor = make_predictor(package, spec_of(package), "auto", "cpu", 8, pixels=large)
    assert "--runtime auto chose torch-bf16: compiling failed (compiling the network" \
        in predictor.description

    def cancelled(*args, **kwargs):
        raise Cancelled("cancelled")

    monkeypatch.setattr(compiled, "compiled_network", cancelled)
    with pytest.raises(Cancelled):
        make_predictor(package, spec_of(package), "auto", "cpu", 8, pixels=large)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc/cpuinfo")
def test_choosing_onnx_runtime_does_not_load_torch(package, tmp_path):
    """On a CPU without native bf16 `auto` runs ONNX Runtime; deciding so must not load
    torch, which alone doubled the job's memory (462 against 1,018 MB, tiny, 2048 px)."""
    flags = tmp_path / "cpuinfo"
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    script = f"""
import sys
from gfm_backend.runtime import device
device.CPUINFO, device.GPU_NODES = {str(flags)!r}, ()
from gfm_backend.package import read_spec
from gfm_backend.runtime.predictors import make_predictor
predictor = make_predictor({str(package)!r}, read_spec({str(package)!r}).for_inference(),
                           "auto", "auto")
print(predictor.description)
print("torch loaded" if "torch" in sys.modules else "no torch")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    description, loaded = done.stdout.strip().splitlines()
    assert description.startswith("onnxruntime") and "auto chose onnx-int8" in description
    assert loaded == "no torch"
