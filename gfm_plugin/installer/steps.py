"""The installer's steps. Each looks first whether its work is already done, so a second
run does only what is missing; `gfm-install.json` in the venv says `installing` until
the last check passed, so a run that was cancelled or failed is never taken for a
finished one."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pythons import BasePython, find_python
from .torch_build import TorchChoice, choose

STATE_FILE = "gfm-install.json"
NEEDED_GB = {"cpu": 2.5, "pypi": 7.0}  # free space for the venv and pip's downloads
CHECK = ("import json, gfm_backend, torch, torchvision, rasterio, onnxruntime, fastapi, timm; "
         "print(json.dumps({'backend': gfm_backend.__version__, 'torch': torch.__version__, "
         "'torchvision': torchvision.__version__, 'cuda': torch.version.cuda}))")
_OFFLINE = ("Could not find a version that satisfies", "No matching distribution found",
            "Failed to establish a new connection", "Temporary failure in name resolution",
            "Network is unreachable", "Name or service not known")


class InstallError(Exception):
    """A step failed; `tail` holds the last lines of the tool that failed."""

    def __init__(self, message: str, tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.tail = tail or []


class InstallCancelled(InstallError):
    def __init__(self) -> None:
        super().__init__("cancelled; run the setup again to finish it (it picks up where it stopped)")


def default_venv_dir(state_dir: str | Path) -> Path:
    """Beside the service's state folder: `<user data>/gfm-qgis/venv`."""
    return Path(state_dir).parent / "venv"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform.startswith("win") else "bin/python")


def bundled_backend() -> Path:
    """The backend source that travels with the plugin (`gfm_plugin/backend/` in the zip;
    the repository itself in a development checkout)."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here / "backend", here.parent):
        if (candidate / "pyproject.toml").is_file() and (candidate / "backend" / "gfm_backend").is_dir():
            return candidate
    raise InstallError(f"the plugin carries no backend source ({here / 'backend'} is missing); "
                       "reinstall the plugin from its zip")


def _pins(bundle: Path) -> dict[str, str]:
    """The exact versions the backend's pyproject pins (torch, torchvision, ...)."""
    text = (bundle / "pyproject.toml").read_text(encoding="utf-8")
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', text))


def bundle_version(bundle: Path) -> str:
    text = (bundle / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if not found:
        raise InstallError(f"{bundle / 'pyproject.toml'} names no version")
    return found.group(1)


@dataclass
class Installer:
    venv: Path
    bundle: Path = field(default_factory=bundled_backend)
    python: str | None = None
    torch_index: str | None = "auto"
    log: Callable[[str], None] = print
    progress: Callable[[float, str], None] = lambda fraction, message: None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    base: BasePython | None = None
    choice: TorchChoice | None = None
    _process: subprocess.Popen | None = None
    _last_error: list[str] = field(default_factory=list)
    _span: tuple[float, float, str] = (0.0, 1.0, "")
    _have_torch: bool = False

    def cancel(self) -> None:
        self.cancel_event.set()
        process = self._process
        if process is not None and process.poll() is None:
            _stop(process)

    def run(self) -> dict[str, Any]:
        """All steps; the summary of what is installed. Raises InstallError."""
        self.venv = Path(self.venv).absolute()
        steps: list[tuple[float, str, Callable[[], None]]] = [
            (0.00, "finding Python", self._find_python), (0.04, "choosing torch", self._choose),
            (0.06, "checking disk space", self._space), (0.08, "virtual environment", self._make_venv),
            (0.15, "torch", self._torch), (0.70, "GFM backend", self._backend)]
        ends = [fraction for fraction, _, _ in steps[1:]] + [0.95]
        for (fraction, title, step), end in zip(steps, ends, strict=True):
            self._check_cancel()
            self._span = (fraction, end, title)
            self.progress(fraction, title)
            step()
        self.progress(0.95, "checking the installation")
        summary = self._verify()
        self._write_state("complete", summary)
        self.progress(1.0, "done")
        self.log(f"backend {summary['backend']} ready: {venv_python(self.venv)}")
        return summary | {"python": str(venv_python(self.venv)), "venv": str(self.venv)}

    # ------------------------------------------------------------------ steps
    def _find_python(self) -> None:
        self.base = find_python(self.python)
        self.log(f"base: {self.base.text}")

    def _choose(self) -> None:
        self.choice = choose(self.torch_index)
        self.log(f"torch: {self.choice.reason}")

    def _space(self) -> None:
        folder = self.venv if self.venv.exists() else self.venv.parent
        while not folder.exists():
            folder = folder.parent
        free_gb = shutil.disk_usage(folder).free / 1e9
        assert self.choice is not None
        self._have_torch = self._torch_ok()  # the torch step reads it (one import, not two)
        need = NEEDED_GB.get(self.choice.build, 7.0) if not self._have_torch else 0.5
        if free_gb < need:
            raise InstallError(f"not enough disk space in {folder}: {free_gb:.1f} GB free, the "
                               f"backend needs about {need:.1f} GB; free some space or choose "
                               "another folder")

    def _make_venv(self) -> None:
        python = venv_python(self.venv)
        if python.exists() and self._runs(python):
            self.log(f"virtual environment: {self.venv} (exists)")
            return
        ours = (self.venv / STATE_FILE).is_file()  # only a venv this installer made is cleared
        if self.venv.exists() and any(self.venv.iterdir()) and not ours:
            raise InstallError(f"{self.venv} exists and is not a virtual environment of this "
                               "installer (or its Python does not run); choose an empty or new "
                               "folder")
        assert self.base is not None
        self._write_state("installing", {})
        self._run([self.base.path, "-m", "venv", *(["--clear"] if ours else []), str(self.venv)])
        self._write_state("installing", {})

    def _torch(self) -> None:
        if self._have_torch:
            self.log("torch: already installed")
            return
        self._write_state("installing", {})
        pins = _pins(self.bundle)
        assert self.choice is not None
        extra = ["--extra-index-url", self.choice.index_url] if self.choice.index_url else []
        self._pip(["install", f"torch=={pins['torch']}", f"torchvision=={pins['torchvision']}",
                   *extra])

    def _backend(self) -> None:
        wanted = bundle_version(self.bundle)
        have = self._query("import gfm_backend; print(gfm_backend.__version__)")
        if have == wanted and self._state().get("state") == "complete":
            self.log(f"GFM backend {wanted}: already installed")
            return
        self._write_state("installing", {})
        self.log(f"GFM backend {have or 'not installed'} -> {wanted}")
        self._pip(["install", "--upgrade", str(self.bundle)])

    def _verify(self) -> dict[str, Any]:
        out = self._query(CHECK)
        if out is None:
            raise InstallError("the installed backend does not import; run the setup again "
                               "to repair it", self._last_error)
        return json.loads(out) | {"torch_build": self.choice.build if self.choice else "?"}

    # ------------------------------------------------------------------ helpers
    def _torch_ok(self) -> bool:
        pins = _pins(self.bundle)
        out = self._query("import torch, torchvision; print(torch.__version__, torchvision.__version__)")
        if not out:
            return False
        versions = [v.split("+")[0] for v in out.split()]
        return versions == [pins["torch"], pins["torchvision"]]

    def _query(self, code: str) -> str | None:
        python = venv_python(self.venv)
        if not python.exists():
            return None
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdin=subprocess.DEVNULL)
        self._last_error = out.stderr.strip().splitlines()[-5:]
        return out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else None

    def _runs(self, python: Path) -> bool:
        return subprocess.run([str(python), "-c", "pass"], capture_output=True, timeout=60).returncode == 0

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads((self.venv / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _write_state(self, state: str, details: dict[str, Any]) -> None:
        self.venv.mkdir(parents=True, exist_ok=True)
        tmp = self.venv / (STATE_FILE + ".partial")
        tmp.write_text(json.dumps({"state": state, "updated": time.time(), **details}, indent=2),
                       encoding="utf-8")
        os.replace(tmp, self.venv / STATE_FILE)

    def _check_cancel(self) -> None:
        if self.cancel_event.is_set():
            raise InstallCancelled()

    def _pip(self, args: list[str]) -> None:
        self._run([str(venv_python(self.venv)), "-m", "pip", "--disable-pip-version-check",
                   "--no-input", *args])

    def _run(self, argv: list[str]) -> None:
        """Run a tool, its output line by line to the log; cancellable; errors explained."""
        self.log("$ " + " ".join(argv))
        tail: deque[str] = deque(maxlen=25)
        count = 0
        lines: queue.Queue[str | None] = queue.Queue()
        self._process = _start(argv)
        threading.Thread(target=_pump, args=(self._process, lines), daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.cancel_event.is_set():
                    _stop(self._process)
                continue
            if line is None:
                break
            tail.append(line)
            self.log(line)
            lo, hi, title = self._span  # each line of pip's moves the bar a little, never past
            count += 1
            self.progress(lo + (hi - lo) * (1 - 0.97 ** count), title)
        code = self._process.wait()
        self._process = None
        self._check_cancel()
        if code != 0:
            raise _explain(argv, list(tail))


def _start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PIP_PROGRESS_BAR": "off"}
    kwargs: dict[str, Any] = {"start_new_session": True} if os.name == "posix" else {
        "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", stdin=subprocess.DEVNULL, env=env, **kwargs)


def _pump(process: subprocess.Popen, lines: queue.Queue[str | None]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line.rstrip())
    lines.put(None)


def _stop(process: subprocess.Popen) -> None:
    """Stop the tool and its children (pip's build subprocesses)."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
        process.wait(10)
    except (ProcessLookupError, PermissionError, OSError):
        return
    except subprocess.TimeoutExpired:
        process.kill()


def _explain(argv: list[str], tail: list[str]) -> InstallError:
    text = "\n".join(tail)
    command = " ".join(argv)
    if "No space left on device" in text:
        return InstallError("the disk filled up while installing; free some space and run the "
                            "setup again", tail)
    if any(marker in text for marker in _OFFLINE):
        return InstallError("pip could not download what the backend needs (is this machine "
                            "offline, or is the package index unreachable?). On a machine with "
                            f"access to the index, or once online, run by hand:\n  {command}", tail)
    return InstallError(f"this step failed: {command}", tail)
