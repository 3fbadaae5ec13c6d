"""The compiled network's cache (`runtime/compiled.py`): what its key covers, what it
keeps, and a compile that is cancelled or whose compiler fails leaves nothing behind.
Compiling a whole network is tested on a trained model in `test_inference_tiles.py`."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gfm_backend.atomic import atomic_path
from gfm_backend.errors import Cancelled, GfmError
from gfm_backend.models import CONFIGS, build_encoder
from gfm_backend.models.network import build_network, save_network
from gfm_backend.package import ModelSpec, default_classes, read_spec, write_spec
from gfm_backend.progress import Progress
from gfm_backend.runtime import compiled
from gfm_backend.runtime.compiled import cache_dir, compiled_key, compiled_network


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A random-weight tiny segmentation package (what is compiled does not matter here)."""
    root = tmp_path_factory.mktemp("package")
    enc = build_encoder(CONFIGS["tiny"])
    spec = ModelSpec(task="segmentation", classes=default_classes(["a", "b"]),
                     encoder=enc.config.to_json(), gsd_m=1.0, tile_size=192, tile_overlap=48,
                     head={"type": "upernet", "channels": 32}, name="random")
    save_network(build_network(spec, enc).eval(), spec, root)
    write_spec(root, spec)
    return root


def test_the_key_follows_weights_tile_batch_precisions_and_threads(package, tmp_path):
    spec = read_spec(package)
    key = compiled_key(package, spec, 8, True)
    assert key == compiled_key(package, spec, 8, True)
    others = {compiled_key(package, spec, 4, True), compiled_key(package, spec, 8, False),
              compiled_key(package, spec.for_inference(384), 8, True),
              compiled_key(package, spec, 8, True, int8=True),
              compiled_key(package, spec, 8, True, threads=compiled.job_threads() + 1)}
    assert key not in others and len(others) == 5
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in package.iterdir():
        data = f.read_bytes()
        (copy / f.name).write_bytes(data[:-1] + bytes([data[-1] ^ 1])
                                    if f.name == "model.safetensors" else data)
    assert compiled_key(copy, spec, 8, True) != key


def test_the_weights_are_hashed_once_while_the_file_is_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("GFM_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights, first")
    first = compiled.weights_digest(weights)
    hashed, blake2b = [], hashlib.blake2b
    monkeypatch.setattr(compiled.hashlib, "blake2b",
                        lambda **kw: hashed.append(kw) or blake2b(**kw))
    assert compiled.weights_digest(weights) == first and not hashed  # remembered
    with atomic_path(weights) as tmp:  # as a fine-tune rewrites its package
        tmp.write_bytes(b"weights, again")
    assert compiled.weights_digest(weights) != first and hashed
    assert len(list((cache_dir() / compiled.DIGESTS).glob("*.txt"))) == 2


def test_the_cache_keeps_the_most_recently_used_and_only_its_own_files(tmp_path, monkeypatch):
    monkeypatch.setenv("GFM_CACHE_DIR", str(tmp_path))
    folder = cache_dir()
    folder.mkdir(parents=True)
    entries = []
    for i in range(compiled.CACHE_ENTRIES + 3):
        entry = folder / f"gfm-{i:032x}.pt2"
        entry.write_bytes(b"x")
        os.utime(entry, (1000 + i, 1000 + i))
        entries.append(entry)
    mine = folder / "notes.pt2"
    mine.write_bytes(b"someone else's")
    compiled._prune(folder, keep=entries[0])  # just written, though its clock says old
    kept = sorted(p.name for p in folder.iterdir() if p.suffix == ".pt2")  # and lock files
    assert kept == sorted([entries[0].name, mine.name]
                          + [e.name for e in entries[-compiled.CACHE_ENTRIES:]])


def test_a_cache_folder_that_cannot_be_made_is_named(package, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GFM_CACHE_DIR", str(blocker))
    with pytest.raises(GfmError, match="cannot keep compiled networks in .*a-file.*GFM_CACHE_DIR"):
        compiled_network(package, read_spec(package), 8, True)
    assert blocker.read_text() == "not a folder"


def _no_compile_left(folder) -> None:
    assert not list(folder.glob("*.pt2")) and not list(folder.glob(".*partial*"))
    ps = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "compile_network"],
                        capture_output=True, text=True)  # this test's compiles only
    assert ps.stdout.strip() == ""


def test_a_cancel_stops_the_compile_and_leaves_no_file(package, tmp_path, monkeypatch):
    monkeypatch.setenv("GFM_CACHE_DIR", str(tmp_path))
    progress = Progress()
    threading.Timer(3.0, progress.cancel).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        compiled_network(package, read_spec(package), 8, True, progress)
    assert time.monotonic() - t0 < 10
    _no_compile_left(cache_dir())


def test_a_failing_compiler_is_a_clear_error_and_leaves_no_file(package, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("GFM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a "compiler" that fails every build
    with pytest.raises(GfmError, match="compiling the network for --runtime torch-compiled "
                       r"failed \(use --runtime torch-bf16"):
        compiled_network(package, read_spec(package), 2, True)
    _no_compile_left(cache_dir())
    log = list(cache_dir().glob("gfm-*.log"))  # the compiler's whole output, for a bug report
    assert len(log) == 1 and "InvalidCxxCompiler" in log[0].read_text()


def test_no_compiler_is_named_before_anything_runs(package, tmp_path, monkeypatch):
    monkeypatch.setenv("GFM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(GfmError, match="needs a C\\+\\+ compiler"):
        compiled_network(package, read_spec(package), 8, True)
    _no_compile_left(cache_dir())


def test_a_killed_job_takes_its_compile_with_it(package,
                                                  tmp_path):
    env = os.environ | {"GFM_CACHE_DIR": str(tmp_path)}
    code = ("import sys; from pathlib import Path; from gfm_backend.package import read_spec; "
            "from gfm_backend.runtime.compiled import compiled_network; "
            "p = Path(sys.argv[1]); compiled_network(p, read_spec(p), 8, True)")
    job = subprocess.Popen([sys.executable, "-c", code, str(package)], env=env)
    try:
        child = _wait_for_compile(job.pid)
        job.kill()  # as the service does to a job that ignores its cancel
        job.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        job.kill()


def test_the_next_compile_clears_what_a_killed_one_half_wrote(tmp_path):
    entry = tmp_path / "gfm-00ff.pt2"
    with atomic_path(entry, suffix=".pt2", exists=False) as tmp:  # the name a compile writes
        stale = tmp
        stale.write_bytes(b"half")
        other = tmp_path / ".gfm-11ee.pt2.abc.partial.pt2"  # another key's, maybe in progress
        other.write_bytes(b"half")
        compiled._clear_partials(entry)
        assert not stale.exists() and other.exists()
        stale.write_bytes(b"whole")  # the block ends as a finished compile's does


def _wait_for_compile(parent: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ps = subprocess.run(["pgrep", "-P", str(parent), "-f", "compile_network"],
                            capture_output=True, text=True)
        if ps.stdout.strip():
            return int(ps.stdout.split()[0])
        time.sleep(0.2)
    raise AssertionError("the compile never started")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"
