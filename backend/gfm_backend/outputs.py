"""Output folders: new or empty, or a previous output of the same kind replaced whole.

The rule every job that writes a folder follows (GDAL's utilities refuse to overwrite
without `-overwrite`; rsync and git never delete what they did not write):

- the folder is new or empty, or it holds a previous output of the same kind; replacing
  that needs `overwrite` (`--overwrite` on the command line), and then every file of the
  previous output is replaced or removed, and nothing else is touched;
- a folder holding anything else (another kind of output, someone's files, a folder
  where we write a file) is refused before any work starts, naming what is in the way;
- the job's inputs (raster, labels, model) may not lie inside it;
- one job writes a folder at a time: a hidden `.gfm-writing` folder inside it is both
  the lock and the staging area (same filesystem as the results, so the final renames
  never cross devices); a second job finds it and is refused.

Each finished output carries `.gfm-output.json`, naming its kind and its files; outputs
written before the manifest existed are recognised by their file names.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_text_atomic
from .errors import InputError

MANIFEST = ".gfm-output.json"
OVERWRITE_HELP = "replace a previous output of this kind in out (never anybody else's files)"
WRITING = ".gfm-writing"
OWNER = "owner.json"
_OURS_ALWAYS = frozenset({MANIFEST, WRITING})


class FolderBusy(InputError):
    """Another job is writing the folder now (the service answers 409, not 400)."""


@dataclass(frozen=True)
class OutputKind:
    """A kind of output folder: `marker` is the file that says a finished one is there;
    `patterns` are the names (globs) it may hold, to recognise one without a manifest."""

    name: str
    marker: str
    patterns: tuple[str, ...]
    noun: str
    dirs: tuple[str, ...] = ()  # the folders it writes (everything else of ours is a file)
    again: str = ("pass --overwrite (service: \"overwrite\": true) to replace it, or choose "
                  "another output folder")

    def owns(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)


CLASSIFY = OutputKind("classify", "report.json", (
    "classes.tif", "classes.tif.aux.xml", "classes.qml", "confidence.tif", "confidence.tif.aux.xml",
    "confidence.qml", "polygons.gpkg", "polygons.gpkg-*", "polygons.qml", "report.json"),
    "classification result")
MODEL = OutputKind("model", "model.json", (
    "model.json", "model.safetensors", "model.onnx", "model.int8.onnx", "report.json",
    "training_curve.png",
    "confusion_matrix.png"), "model package")
# files GIS tools add beside ours (GeoPackage journals, GDAL statistics and overviews)
SIDE_SUFFIXES = ("-wal", "-shm", "-journal", ".aux.xml", ".ovr")
PRETRAIN = OutputKind("pretrain", "run.json", (
    "run.json", "metrics.jsonl", "checkpoints", "ranks", "encoder.safetensors", "loss.png"),
    "pretraining run", dirs=("checkpoints", "ranks"),
    again="add --resume to continue it, or --overwrite to start afresh, or choose another --out "
          "(nothing was overwritten)")
CHANGE = OutputKind("change", "report.json", (
    "change.tif", "change.tif.aux.xml", "change.qml", "confidence.tif", "confidence.tif.aux.xml",
    "confidence.qml", "polygons.gpkg", "polygons.gpkg-*", "polygons.qml", "report.json"),
    "change detection result")
KINDS = (CLASSIFY, MODEL, PRETRAIN, CHANGE)


@dataclass
class Contents:
    """What a folder holds: the kind of output found (or None), our files, everyone else's."""

    kind: OutputKind | None
    ours: list[str]
    foreign: list[str]

    @property
    def empty(self) -> bool:
        return not self.ours and not self.foreign


def usable_out_path(out: Path | str) -> Path:
    """The folder's real absolute path, refusing names that cannot be a folder we write."""
    text = str(out)
    if not text.strip():
        raise InputError(text, "give an output folder")
    bad = next((c for c in text if ord(c) < 32), None)
    if bad is not None:
        raise InputError(repr(text), f"the output path contains a control character ({bad!r}); "
                         "check for a stray tab or newline")
    path = Path(text)
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise InputError(path, f"is a symbolic link that leads nowhere ({os.readlink(path)!r}: "
                             f"{getattr(exc, 'strerror', None) or exc}); choose a real folder") from exc
        path = target
    path = path.absolute()
    if path.exists() and not path.is_dir():
        raise InputError(path, "exists and is not a folder; choose another output folder")
    return path


def _kind_by_manifest(folder: Path) -> tuple[OutputKind | None, set[str] | None]:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = {str(f) for f in data["files"]}
        kind = next((k for k in KINDS if k.name == data["kind"]), None)
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    return kind, files


def inspect(folder: Path) -> Contents:
    """Sort a folder's entries into ours (one output kind) and foreign."""
    if not folder.is_dir():
        return Contents(None, [], [])
    names = sorted(p.name for p in folder.iterdir() if p.name not in _OURS_ALWAYS)
    kind, listed = _kind_by_manifest(folder)
    if kind is None:  # written before manifests, or no output at all
        kind = next((k for k in KINDS if k.marker in names and all(k.owns(n) for n in names)), None)
    if kind is None:
        return Contents(None, [], names)

    def ours(name: str) -> bool:
        """Listed in the manifest (or a side file of a listed file); without a manifest, one
        of the names the kind writes."""
        entry = folder / name
        if listed is not None:
            base = next((name[: -len(s)] for s in SIDE_SUFFIXES if name.endswith(s)), name)
            if name not in listed and base not in listed:
                return False
        # a folder where the kind writes a file (or a link anywhere) is someone else's
        return not entry.is_symlink() and (entry.is_file() or (entry.is_dir() and name in kind.dirs))

    return Contents(kind, [n for n in names if ours(n)], [n for n in names if not ours(n)])


def _listing(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_inputs_outside(out: Path, inputs: Mapping[str, Path | str | None]) -> None:
    """The job's inputs may never lie inside the folder it writes."""
    for role, value in inputs.items():
        if value is None or str(value).startswith(("/vsi", "http://", "https://", "s3://", "gs://")):
            continue
        try:
            path = Path(value).resolve()
        except (OSError, RuntimeError):
            continue
        if path == out or out in path.parents:
            raise InputError(out, f"the {role} {value} lies inside this output folder; choose an "
                             "output folder that holds none of the job's inputs")


def check_output_dir(out: Path | str, kind: OutputKind, overwrite: bool = False,
                     inputs: Mapping[str, Path | str | None] | None = None,
                     continuing: bool = False) -> Path:
    """Refuse an output folder the job may not write (see the module rule); returns its path.

    `continuing`: the job carries on a previous output of its kind (a resumed run).
    """
    path = usable_out_path(out)
    check_inputs_outside(path, inputs or {})
    if _writer_alive(path):
        raise FolderBusy(path, "another job is writing this folder right now; wait for it to "
                         "end or choose another output folder")
    contents = inspect(path)
    if contents.empty:
        return path
    if contents.kind is not None and contents.kind is not kind:
        raise InputError(path, f"holds a {contents.kind.noun}, not a {kind.noun}; choose another "
                         "output folder (nothing was changed)")
    if contents.foreign:
        raise InputError(path, f"holds files that are not a previous {kind.noun} "
                         f"({_listing(contents.foreign)}); choose an empty or new output folder "
                         "(nothing was changed)")
    if not overwrite and not continuing:
        raise InputError(path, f"already holds a {kind.noun}: {kind.again}")
    return path


# ------------------------------------------------------------------------ the write lock
def _owner_pid(lock: Path) -> int | None:
    try:
        data = json.loads((lock / OWNER).read_text(encoding="utf-8"))
        return int(data["pid"]) if data.get("host") == socket.gethostname() else -1
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_alive(folder: Path) -> bool:
    lock = folder / WRITING
    if not lock.is_dir():
        return False
    pid = _owner_pid(lock)
    # another host's lock (-1) cannot be checked, so it stands; a lock without an owner
    # file is one being created this instant
    return pid is None or pid == -1 or _pid_alive(pid)


def acquire(folder: Path) -> Path:
    """Take the folder's write lock (creating the folder); a stale lock of a dead job is ours
    to clear. Returns the lock folder, which is also the staging area."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / WRITING
    for _ in range(2):
        try:
            lock.mkdir()
        except FileExistsError:
            if _writer_alive(folder):
                raise FolderBusy(folder, "another job is writing this folder right now; wait "
                                 "for it to end or choose another output folder") from None
            shutil.rmtree(lock, ignore_errors=True)  # left by a job that died: only ours inside
            continue
        try:
            write_text_atomic(lock / OWNER, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        except BaseException:  # a full disk: leave nothing behind
            shutil.rmtree(lock, ignore_errors=True)
            raise
        return lock
    raise InputError(folder, "cannot take the write lock of this folder")


def release(folder: Path, lock: Path, created: bool) -> None:
    shutil.rmtree(lock, ignore_errors=True)
    if created:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if still empty: a failed first run leaves no folder


# ------------------------------------------------------------------------ writing
def write_manifest(folder: Path, kind: OutputKind, files: list[str]) -> None:
    write_text_atomic(folder / MANIFEST, json.dumps({"kind": kind.name, "files": sorted(files)},
                                                    indent=1))


def add_to_manifest(folder: Path, kind: OutputKind, name: str) -> None:
    """A file added to a finished output later (an ONNX export into its package)."""
    found, files = _kind_by_manifest(folder)
    if found is kind and files is not None and name not in files:
        write_manifest(folder, kind, [*files, name])


@contextlib.contextmanager
def staged_output(out: Path | str, kind: OutputKind, overwrite: bool = False,
                  inputs: Mapping[str, Path | str | None] | None = None,
                  last: tuple[str, ...] = ()) -> Iterator[Path]:
    """Check and lock `out`, yield a staging folder; on success replace the previous output.

    The previous output's files are moved aside, the new files renamed into place (names
    in `last` after the others: the file that marks a finished output), the manifest
    written, and only then the old files deleted. A failure or cancel deletes only the
    staging folder. Files that are not ours are never touched.
    """
    folder = check_output_dir(out, kind, overwrite, inputs)
    created = not folder.exists()
    try:
        lock = acquire(folder)
    except BaseException:  # another job's lock, or a full disk: only undo our mkdir
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    try:
        stage = lock / "new"
        stage.mkdir()
        yield stage
        _commit(folder, lock, stage, kind, last)
    finally:
        release(folder, lock, created)


def _commit(folder: Path, lock: Path, stage: Path, kind: OutputKind, last: tuple[str, ...]) -> None:
    previous = inspect(folder)
    replaced = set(previous.ours) if previous.kind is kind else set()
    new = sorted((p.name for p in stage.iterdir()), key=lambda n: (n in last, n))
    for name in new:  # something appeared while the job ran: refuse before moving anything
        target = folder / name
        if name not in replaced and (target.exists() or target.is_symlink()):
            raise InputError(target, "appeared in the output folder while the job ran; the "
                             "result was not written over it")
    old = lock / "old"
    old.mkdir()
    with contextlib.suppress(FileNotFoundError):
        os.replace(folder / MANIFEST, old / MANIFEST)
    for name in sorted(replaced):
        os.replace(folder / name, old / name)
    for name in new:
        os.replace(stage / name, folder / name)
    write_manifest(folder, kind, new)


def prepare_in_place(out: Path | str, kind: OutputKind, overwrite: bool, continuing: bool,
                     inputs: Mapping[str, Path | str | None] | None = None) -> Path:
    """For outputs written as they go (pretraining runs): check; with `overwrite` and not
    continuing, delete the previous output of the kind (ours only). The caller then holds
    the lock with `acquire` while it writes."""
    folder = check_output_dir(out, kind, overwrite, inputs, continuing=continuing)
    contents = inspect(folder)
    if overwrite and not continuing and contents.kind is kind:
        for name in contents.ours:
            entry = folder / name
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        with contextlib.suppress(FileNotFoundError):
            (folder / MANIFEST).unlink()
    return folder
