"""QgsTask wrapper: submit a backend job and follow it, so the QGIS window never freezes."""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import QgsTask

from .client import BackendClient, BackendError


class BackendJobTask(QgsTask):
    """Runs one backend job; cancelling the task cancels the job on the backend."""

    def __init__(self, description: str, client: BackendClient, job_type: str, params: dict,
                 on_done: Callable[[BackendJobTask, bool], None] | None = None,
                 poll_s: float = 0.5) -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.client = client
        self.job_type = job_type
        self.params = params
        self.on_done = on_done
        self.poll_s = poll_s
        self.job_id: str | None = None
        self.info: dict = {}
        self.error: str | None = None

    def run(self) -> bool:  # worker thread: no GUI calls here
        try:
            self.job_id = self.client.submit(self.job_type, self.params)
            self.info = self.client.wait(
                self.job_id, poll_s=self.poll_s, on_progress=self._progress,
                should_cancel=self.isCanceled,
            )
        except BackendError as exc:
            self.error = str(exc)
            return False
        if self.info.get("state") == "cancelled" and self.isCanceled():
            return True  # what the user asked for: QGIS should not report "Task failed"
        if self.info.get("state") != "succeeded":
            self.error = self.info.get("message") or f"job {self.info.get('state')}"
            return False
        return True

    def _progress(self, info: dict) -> None:
        self.info = info
        self.setProgress(100.0 * float(info.get("progress") or 0.0))

    def finished(self, result: bool) -> None:  # main thread
        if self.on_done is not None:
            self.on_done(self, result)


class StartBackendTask(QgsTask):
    """Finds or starts the configured backend and checks it takes our calls, off the GUI
    thread (starting a local backend may take up to a minute)."""

    def __init__(self, settings, on_done: Callable[[StartBackendTask, bool], None],
                 start: bool = True) -> None:
        super().__init__("Start GFM backend" if start else "Connect to GFM backend", QgsTask.Flags())
        self.settings = settings
        self.start = start
        self.on_done = on_done
        self.client: BackendClient | None = None
        self.status_text = ""  # not `status`: QgsTask.status() is the task's state
        self.error: str | None = None

    def run(self) -> bool:  # worker thread
        from .connection import describe, get_client

        try:
            self.client = get_client(self.settings, start=self.start)
            self.status_text = describe(self.client)
        except BackendError as exc:
            self.error = str(exc)
            return False
        return True

    def finished(self, result: bool) -> None:  # main thread
        self.on_done(self, result)
