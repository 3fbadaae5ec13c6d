"""`--runtime torch-compiled`: the network compiled ahead of time for this CPU, cached.

torch's eager bf16 spends about a third of base's time copying: casting weights for
every batch, making window partitions contiguous, adding biases apart from the matmuls.
AOTInductor compiles the whole network, weights frozen and pre-packed for oneDNN, into
one shared library (a `.pt2` package): on this machine's AMX CPU base runs 3.7x eager
fp32 at 192 px tiles (60 against 223 ms a tile) and tiny 2.7x, where eager bf16 gives
2.4x and 1.25x. The map is bf16's (autocast: norms and softmax in fp32).

Compiling takes one to two minutes (a C++ compiler builds the kernels), so a package is
compiled once per model, tile, batch size, CPU and torch version, in a child process (the
job can be cancelled meanwhile, and a failing compiler cannot take the job down with
it), and kept in the user's cache. The compiled batch is static (a dynamic batch ran
2.7x slower on tiny), so a short batch is padded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs

from ..atomic import atomic_path
from ..errors import GfmError
from ..package import ModelSpec
from ..progress import Progress, silent

CACHE_DIR_ENV = "GFM_CACHE_DIR"
CACHE_ENTRIES = 6  # compiled networks kept (base: 200 MB each); the least recently used go
# what gets compiled: the network's code, and how it is exported and compiled
NETWORK_SOURCES = ("models/network.py", "models/swin.py", "models/heads.py",
                   "models/change.py", "runtime/compile_network.py")
POLL_S = 0.25
DIGESTS, DIGESTS_KEPT = "digests", 256  # remembered hashes of weights files


def cache_dir() -> Path:
    """`$GFM_CACHE_DIR/compiled`, else the user's cache (e.g. ~/.cache/gfm-qgis/compiled)."""
    root = os.environ.get(CACHE_DIR_ENV) or platformdirs.user_cache_dir("gfm-qgis", appauthor=False)
    return Path(root).expanduser() / "compiled"


def compiled_key(model_dir: Path, spec: ModelSpec, batch: int, bf16: bool,
                 int8: bool = False, threads: int | None = None) -> str:
    """Changes with anything the compiled library depends on: the weights, the network's
    code and shape, the tile and batch, bf16 and int8, this CPU, its compute threads (the
    job's, `job_threads`) and torch. Not with what the network never sees (class names,
    tile overlap, input scaling)."""
    import timm
    import torch

    from ..models.network import WEIGHTS_FILE

    digest = hashlib.blake2b(digest_size=16)
    digest.update(weights_digest(Path(model_dir) / WEIGHTS_FILE).encode())
    package = Path(__file__).resolve().parent.parent
    for name in NETWORK_SOURCES:
        digest.update((package / name).read_bytes())
    network = [spec.task, spec.encoder, spec.head, spec.num_classes, spec.input_channels,
               spec.tile_size, batch, bf16, int8, threads or job_threads()]
    digest.update(json.dumps([network, torch.__version__, timm.__version__, _cpu_signature()],
                             sort_keys=True).encode())
    return digest.hexdigest()


def weights_digest(weights: Path) -> str:
    """The weights file's hash, remembered in the cache under the file's identity (path,
    inode, size, modification and change times): hashing base's 390 MB took 0.3-0.6 s of
    every job. A file changed while it was hashed is not remembered."""
    before = _file_identity(weights)
    memo = cache_dir() / DIGESTS / f"{hashlib.sha1(before.encode()).hexdigest()}.txt"
    with contextlib.suppress(OSError):
        known = memo.read_text(encoding="ascii").strip()
        if len(known) == 32:
            return known
    digest = hashlib.blake2b(digest_size=16)
    with open(weights, "rb") as f:
        while chunk := f.read(1 << 23):
            digest.update(chunk)
    if _file_identity(weights) == before:
        with contextlib.suppress(OSError), atomic_path(memo, suffix=".txt") as tmp:
            tmp.write_text(digest.hexdigest(), encoding="ascii")
        _prune_digests(memo.parent)
    return digest.hexdigest()


def _file_identity(path: Path) -> str:
    st = path.stat()
    return json.dumps([str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                       st.st_ctime_ns])


def _prune_digests(folder: Path) -> None:
    """Keep the DIGESTS_KEPT most recent remembered hashes (a few bytes each)."""
    with contextlib.suppress(OSError):
        memos = sorted(folder.glob("*.txt"), key=lambda m: m.stat().st_mtime, reverse=True)
        for old in memos[DIGESTS_KEPT:]:
            old.unlink(missing_ok=True)


def job_threads() -> int:
    """The compute threads this job runs on (torch's, as a torchrun rank or the service set
    them). Inductor writes the count into the compiled kernels, so the compile takes the
    job's: a child left to its defaults took torchrun's OMP_NUM_THREADS=1, and a library
    from a 2-core machine's cache ran on 2 threads of a 16-core one."""
    import torch

    return torch.get_num_threads()


def _cpu_signature() -> list[str]:
    """Inductor compiles for this very CPU (-march=native): a cache in a home folder shared
    between machines must not hand one CPU's library to another (illegal instruction)."""
    import torch

    flags = ""
    with contextlib.suppress(OSError):  # Linux: the first core's model and instruction sets
        info = Path("/proc/cpuinfo").read_text(errors="replace")
        flags = "|".join(line.split(":", 1)[1].strip() for line in info.splitlines()
                         if line.startswith(("model name", "flags")))[:8192]
    return [platform.machine(), platform.processor(), torch.backends.cpu.get_cpu_capability(),
            hashlib.sha1(flags.encode()).hexdigest()]


def compiled_network(model_dir: Path, spec: ModelSpec, batch: int, bf16: bool,
                     progress: Progress | None = None, int8: bool = False) -> tuple[Path, float]:
    """The cached compiled package for this model (compiled first if missing) and the
    seconds spent compiling (0 from the cache). One process compiles; others wait."""
    import filelock

    progress = progress or silent()
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GfmError(f"cannot keep compiled networks in {folder} ({exc}): set "
                       f"{CACHE_DIR_ENV} to a folder you can write, or use --runtime "
                       "torch-bf16") from exc
    threads = job_threads()
    key = compiled_key(model_dir, spec, batch, bf16, int8, threads)
    path = folder / f"gfm-{key}.pt2"
    lock = filelock.FileLock(str(folder / f"gfm-{key}.lock"))
    while True:
        try:
            lock.acquire(timeout=POLL_S)
            break
        except filelock.Timeout:  # another job is compiling it: wait, cancellably
            progress(0.0, "waiting for another job compiling this network for this CPU")
    try:
        if path.is_file():
            os.utime(path)  # recently used
            return path, 0.0
        _clear_partials(path)
        t0 = time.perf_counter()
        with atomic_path(path, suffix=".pt2", exists=False) as tmp:
            options = ["--threads", str(threads), *["--bf16"] * bf16, *["--int8"] * int8]
            _compile_in_child(model_dir, spec, batch, options, tmp, path.with_suffix(".log"),
                              progress)
        _prune(folder, keep=path)
        return path, time.perf_counter() - t0
    finally:
        lock.release()


def _compile_in_child(model_dir: Path, spec: ModelSpec, batch: int, options: list[str],
                      out: Path, log_path: Path, progress: Progress) -> None:
    """`python -m gfm_backend.runtime.compile_network ...`, polled for a cancel; its log
    stays beside the cache entry when it fails."""
    _check_compiler()
    command = [sys.executable, "-m", "gfm_backend.runtime.compile_network", str(model_dir),
               "--tile", str(spec.tile_size), "--batch", str(batch), "--out", str(out),
               "--parent", str(os.getpid()), *options]
    # inductor's own scratch files (kernels, the frozen weights again) go with the compile
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".inductor-") as scratch, \
            open(log_path, "wb") as log:
        child = subprocess.Popen(command, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 env=os.environ | {"TORCHINDUCTOR_CACHE_DIR": scratch})
        try:
            _wait_for(child, progress)
        except BaseException:  # a cancel, or anything else: the compiler and its workers go
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            log_path.unlink(missing_ok=True)
            raise
    if child.returncode != 0:
        lines = log_path.read_text(errors="replace").strip().splitlines() or ["no output"]
        last = (f"killed by signal {-child.returncode} (out of memory?)"
                if child.returncode < 0 else lines[-1])
        raise GfmError("compiling the network for --runtime torch-compiled failed (use "
                       f"--runtime torch-bf16 instead): {last} (the whole log: {log_path})")
    log_path.unlink(missing_ok=True)


def _wait_for(child: subprocess.Popen, progress: Progress) -> None:
    t0 = time.monotonic()
    while child.poll() is None:
        progress(0.0, f"compiling the network for this CPU, {time.monotonic() - t0:.0f} s "
                 "(once per model, tile and batch size; about 1-2 minutes)")
        time.sleep(POLL_S)


def has_compiler() -> bool:
    """Whether a C++ compiler AOTInductor can use is installed (on Windows: assumed, as
    MSVC's cl.exe is found through its own environment)."""
    if sys.platform == "win32":
        return True
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return any(shutil.which(name) for name in names)


def _check_compiler() -> None:
    """AOTInductor builds C++; say so plainly where no compiler is installed."""
    if not has_compiler():
        raise GfmError("--runtime torch-compiled needs a C++ compiler (g++ or clang++; on "
                       "Debian/Ubuntu: apt install g++), or use --runtime torch-bf16")


def _clear_partials(path: Path) -> None:
    """A killed job's half-written `path`: removed by the next compile, which holds the lock."""
    for stale in path.parent.glob(f".{path.name}.*.partial.pt2"):
        stale.unlink(missing_ok=True)


def _prune(folder: Path, keep: Path) -> None:
    """Keep the CACHE_ENTRIES most recently used compiled networks (ours only). An entry
    whose lock another process holds (finding or loading it) is left for next time."""
    import filelock

    def used(entry: Path) -> float:
        try:
            return entry.stat().st_mtime
        except OSError:  # pruned by another process a moment ago
            return 0.0

    entries = sorted(folder.glob("gfm-*.pt2"), key=used, reverse=True)
    for old in entries[CACHE_ENTRIES:]:
        if old == keep:
            continue
        try:
            with filelock.FileLock(str(old.with_suffix(".lock")), timeout=0):
                old.unlink(missing_ok=True)
        except (filelock.Timeout, OSError):
            continue


class CompiledPredictor:
    """Runs the compiled network at its static batch: short batches padded, long ones split.
    The compiled code trusts its input's shape (another one reads out of bounds), so the
    shape is checked here."""

    fixed_batch = True  # the streaming loop fills batches across tile rows

    def __init__(self, path: Path, batch: int, tile_shape: tuple[int, int, int],
                 description: str) -> None:
        import torch

        # loading imports torch's C++ extension helper, which warns that a CPU-only
        # machine has no CUDA: true, and nothing the user need act on
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        self.torch = torch
        try:
            self.runner: Any = torch._inductor.aoti_load_package(str(path))
        except Exception as exc:  # torch raises RuntimeError and its own kinds
            path.unlink(missing_ok=True)  # ours, in the cache: the next job compiles it anew
            raise GfmError(f"the compiled network {path} could not be loaded ({exc}); it was "
                           "removed from the cache, so the next run compiles it again") from exc
        self.batch = batch
        self.tile_shape = tile_shape  # (channels, height, width)
        self.description = description

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from ..models.heads import probabilities  # torch's own resize and softmax

        torch, n = self.torch, len(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.tile_shape:
            raise ValueError(f"the compiled network takes tiles of {self.tile_shape}, "
                             f"not {tuple(batch.shape[1:])}")
        parts = []
        with torch.inference_mode():
            for start in range(0, n, self.batch):
                chunk = np.ascontiguousarray(batch[start:start + self.batch], dtype=np.float32)
                short = self.batch - len(chunk)
                if short:
                    chunk = np.concatenate([chunk, np.zeros((short, *chunk.shape[1:]), np.float32)])
                out = probabilities(self.runner(torch.from_numpy(chunk)), self.tile_shape[1:])
                parts.append(out.numpy()[: self.batch - short])
        return np.concatenate(parts)
