"""Where the service keeps its state, and the settings `gfm serve` takes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

API_VERSION = 1
STATE_DIR_ENV = "GFM_STATE_DIR"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def default_state_dir() -> Path:
    """`$GFM_STATE_DIR`, else the user's data directory (e.g. ~/.local/share/gfm-qgis/service).

    The plugin finds a running service through `server.json` in this folder.
    """
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("gfm-qgis", appauthor=False)) / "service"


@dataclass
class ServiceConfig:
    """Settings of one `gfm serve` process; the paths below all live in `state_dir`."""

    state_dir: Path = field(default_factory=default_state_dir)
    host: str = "127.0.0.1"
    port: int = 0
    gpu_jobs: int = 1  # per GPU device when there are several
    cpu_jobs: int = 2
    gpu_devices: list[int] | None = None  # GPU lanes, one per device ([] or None: one lane)
    split_min_mpix: float = 16.0  # a classify this large may run as ranks on free GPUs (split.py)
    cancel_grace_s: float = 10.0
    heartbeat_timeout_s: float = 60.0  # a worker silent this long is hung: killed, job failed
    model_dirs: list[Path] = field(default_factory=list)
    allow_hosts: list[str] = field(default_factory=list)
    max_upload_gb: float | None = None  # POST /files beyond it: 413
    user_quota_gb: float | None = None  # a user's uploads together beyond it: 413
    data_root: Path | None = None  # jobs read and write only here (and uploads, outputs)
    keep_days: float | None = None  # uploads and service-picked outputs older than this go
    certfile: Path | None = None  # HTTPS with this certificate and key
    keyfile: Path | None = None

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).expanduser().resolve()
        if not self.model_dirs:
            self.model_dirs = [self.state_dir / "models"]
        self.model_dirs = [Path(p).expanduser().resolve() for p in self.model_dirs]
        if self.data_root is not None:
            self.data_root = Path(self.data_root).expanduser().resolve()

    @property
    def uploads_dir(self) -> Path:
        return self.state_dir / "uploads"

    @property
    def users_path(self) -> Path:
        return self.state_dir / "users.json"

    @property
    def outputs_dir(self) -> Path:
        """Where jobs write when a client names `{"output": NAME}` (it has no path here)."""
        return self.state_dir / "outputs"

    @property
    def quota_bytes(self) -> int | None:
        return _bytes(self.user_quota_gb)

    @property
    def max_upload_bytes(self) -> int | None:
        return _bytes(self.max_upload_gb)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "jobs.sqlite3"

    @property
    def server_json(self) -> Path:
        return self.state_dir / "server.json"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "server.lock"

    @property
    def token_path(self) -> Path:
        return self.state_dir / "token"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "server.log"

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"

    def job_log(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.log"


def _bytes(gib: float | None) -> int | None:
    """A size given in GB on the command line (GiB, as `du -h` counts), in bytes."""
    return None if gib is None else int(gib * 2**30)
