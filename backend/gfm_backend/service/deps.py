"""What the routes share, handed to them by FastAPI's `Depends`: one `ServiceState` per
server process, kept on `app.state.service`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request

from ..weights.store import WeightsStore
from .catalog import find_model
from .config import ServiceConfig
from .device_probe import DeviceProbe
from .dispatcher import Dispatcher
from .job_files import HashCache
from .params import Resolvers
from .store import JobRecord, JobStore
from .uploads import UploadStore
from .users import Caller, UserBook


@dataclass
class ServiceState:
    config: ServiceConfig
    store: JobStore
    dispatcher: Dispatcher
    devices: DeviceProbe
    token: str
    started_at: float
    hashes: HashCache = field(default_factory=HashCache)
    users: UserBook = field(init=False)
    uploads: UploadStore = field(init=False)

    def __post_init__(self) -> None:
        # one of each per server: the book's cache spans requests, the store's folders are
        # made once
        self.users = UserBook(self.config.users_path)
        self.uploads = UploadStore(self.config.uploads_dir, self.config.max_upload_bytes,
                                   self.config.quota_bytes)

    def find_model(self, name: str) -> Path | None:
        """A model name `GET /models` lists -> its package folder."""
        return find_model(name, self.config.model_dirs)

    @property
    def weights(self) -> WeightsStore:
        return WeightsStore(self.config.state_dir / "weights")


    @property
    def resolvers(self) -> Resolvers:
        return self.resolvers_for(None)

    def resolvers_for(self, caller: Caller | None) -> Resolvers:
        """How a caller's names become paths: their own uploads only."""
        uploads = self.uploads
        return Resolvers(find_model=self.find_model, find_weights=self.weights.find,
                         find_upload=lambda upload_id: uploads.path_for_job(upload_id, caller),
                         new_output=self.new_output, allowed=self.allowed_roots)

    @property
    def allowed_roots(self) -> tuple[Path, ...] | None:
        """With `--data-root`: the folders jobs may read and write (else: anywhere)."""
        config = self.config
        if config.data_root is None:
            return None
        return tuple(Path(os.path.realpath(p)) for p in (
            config.data_root, config.uploads_dir, config.outputs_dir, config.state_dir / "weights",
            *config.model_dirs))

    def new_output(self, name: str) -> Path:
        """A folder no job wrote yet, under the service's outputs: `<id>/<name>` (a model
        package keeps its name)."""
        import uuid

        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")[:60]
        return self.config.outputs_dir / uuid.uuid4().hex[:12] / (safe or "output")

    def record(self, job_id: str, caller: Caller | None = None) -> JobRecord:
        """A job by id; another user's is a 404, as if it did not exist."""
        record = self.store.get(job_id)
        if record is None or (caller is not None and not caller.may_see(record.owner)):
            raise HTTPException(404, f"no job with id {job_id!r} (GET /jobs lists them)")
        return record


def service(request: Request) -> ServiceState:
    return request.app.state.service
