"""A job on a backend that does not share this machine's disk: upload the inputs, run the
job, download the results; the transfer time is kept apart from the job's."""

from __future__ import annotations

import time
from pathlib import Path

from .client import BackendClient, BackendError
from .remote_files import download_all, upload
from .tasks import BackendJobTask

CANCELLED = 499  # a status, so the transfer is not retried


class RemoteJobTask(BackendJobTask):
    """`uploads`: the params whose local files go up first (a path, or a list of paths);
    `download_to`: where the results come down (None: they stay on the server)."""

    def __init__(self, description: str, client: BackendClient, job_type: str, params: dict,
                 uploads: tuple[str, ...], download_to: Path | None, on_done=None,
                 poll_s: float = 0.5) -> None:
        super().__init__(description, client, job_type, params, on_done, poll_s)
        self.uploads = uploads
        self.download_to = download_to
        self.transfer_s = 0.0
        self.local_files: dict[str, str] = {}
        self.stage = ""

    def run(self) -> bool:  # worker thread
        start = time.monotonic()
        try:
            for field in self.uploads:
                self.params[field] = self._send(self.params[field])
        except BackendError as exc:
            if self.isCanceled():
                self.info = {"state": "cancelled"}
                return True  # what the user asked for, not a failure
            self.error = f"upload failed: {exc}"
            return False
        self.transfer_s = time.monotonic() - start
        if not super().run() or self.info.get("state") != "succeeded" or self.download_to is None:
            return self.error is None
        start = time.monotonic()
        self.stage = f"downloading the results into {self.download_to}"
        try:
            self.local_files = download_all(self.client, str(self.job_id), self.download_to,
                                            self._bytes)
        except BackendError as exc:
            self.error = f"the job succeeded but its results could not be downloaded: {exc}"
            return False
        self.transfer_s += time.monotonic() - start
        return True

    def _send(self, value):
        if isinstance(value, list):
            return [self._send(v) for v in value]
        path = Path(value)
        self.stage = f"uploading {path.name}"
        return {"file": upload(self.client, path, self._bytes)["id"]}

    def _bytes(self, done: int, total: int) -> None:
        if self.isCanceled():
            raise BackendError("cancelled", CANCELLED)
        self.setProgress(100.0 * done / max(total, 1))
