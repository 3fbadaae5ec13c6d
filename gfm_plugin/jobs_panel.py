"""The dock's Jobs list and report: run jobs as QgsTasks, follow every job the backend has
(Processing's too), cancel, resume, show the selected job's report and open its folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qgis.core import QgsApplication

from .client import BackendClient, BackendError
from .messages import Messages
from .remote_task import RemoteJobTask
from .report_view import PLOTS
from .tasks import BackendJobTask

ClientGetter = Callable[[], "BackendClient | None"]


class JobsPanel:
    def __init__(self, dock, messages: Messages, get_client: ClientGetter,
                 connected: ClientGetter, local: Callable[[], bool]) -> None:
        self.dock = dock
        self.msg = messages
        self.get_client = get_client  # a client that answers now (reconnecting if needed)
        self.connected = connected  # the client as it is: for reading, never starting one
        self.local = local  # the backend shares this machine's disk
        self.tasks: dict[str, BackendJobTask] = {}
        self.jobs: dict[str, dict] = {}  # what the backend last said of each job
        dock.cancel_button.clicked.connect(self.cancel_selected)
        dock.resume_button.clicked.connect(self.resume_selected)
        dock.jobs.currentItemChanged.connect(lambda *_a: self.show_selected())
        dock.report.open_folder_button.clicked.connect(self.open_selected_folder)

    # -- running -------------------------------------------------------------------
    def run_job(self, title: str, job_type: str, params: dict, on_success,
                uploads: tuple[str, ...] = (), download_to: Path | None = None
                ) -> BackendJobTask | None:
        """Run a job in a QgsTask. On a remote backend the `uploads` params' files go up
        first and the results come down into `download_to`; `on_success` then sees the
        local files as `outputs["files"]`."""
        client = self.get_client()
        if client is None:
            return None

        def done(task: BackendJobTask, _ok: bool) -> None:
            key = task.job_id or f"pending:{title}"
            state = task.info.get("state", "failed")
            self.dock.update_job(key, state, float(task.info.get("progress") or 0.0),
                                 task.error or task.info.get("message") or "")
            if task.job_id:
                self.jobs[task.job_id] = task.info
            if state == "succeeded":
                on_success(_with_local_files(task))
            elif state == "cancelled" or task.isCanceled():
                self.msg.info(f"{title}: cancelled")
            else:
                self.msg.error(f"{title}: {task.error}")
            if key == self.dock.selected_job():
                self.show_selected()

        if self.local():
            task = BackendJobTask(title, client, job_type, params, on_done=done)
        else:
            task = RemoteJobTask(title, client, job_type, params, uploads, download_to, on_done=done)
        task.progressChanged.connect(lambda _p: self._follow(task, title))
        QgsApplication.taskManager().addTask(task)
        self.tasks[title] = task
        return task

    def _follow(self, task: BackendJobTask, title: str) -> None:
        pending = f"pending:{title}"
        if task.job_id is None:
            if isinstance(task, RemoteJobTask):  # uploading: the row shows it already
                self.dock.job_row(pending, title)
                self.dock.update_job(pending, "uploading", task.progress() / 100, task.stage)
            return
        self.dock.rekey_job(pending, task.job_id)
        self.dock.job_row(task.job_id, title)
        self.show_state(task.info | {"id": task.job_id})

    def show_state(self, job: dict) -> None:
        self.dock.update_job(job["id"], job.get("state", "?"), float(job.get("progress") or 0.0),
                             job.get("message") or "")

    def merge(self, jobs: list[dict]) -> None:
        """The backend's jobs into the list (oldest first, so the newest is on top): jobs
        started elsewhere (Processing, the command line) appear and move too."""
        for job in reversed(jobs):
            self.dock.job_row(job["id"], job_title(job))
            self.show_state(job)
            self.jobs[job["id"]] = job

    def cancel_selected(self) -> None:
        job_id = self.dock.selected_job()
        if job_id is None:
            return
        for task in self.tasks.values():
            if task.job_id == job_id:
                task.cancel()
                return
        client = self.get_client()
        if client is not None:
            try:
                self.show_state(client.cancel(job_id))
            except BackendError as exc:
                self.msg.error(str(exc))

    def resume_selected(self) -> None:
        """Re-queue an interrupted (or cancelled) pretraining job from its last checkpoint."""
        job_id = self.dock.selected_job()
        client = self.get_client() if job_id is not None else None
        if job_id is None or client is None:
            return
        try:
            info = client.resume(job_id)
        except BackendError as exc:
            self.msg.error(str(exc))
            return
        new_id = info.get("id", job_id)
        self.dock.job_row(new_id, f"Resume {job_id[:8]}")
        self.msg.info(f"pretraining job {job_id[:8]} resumed as {new_id[:8]}")

    # -- report ------------------------------------------------------------------
    def show_selected(self) -> None:
        """The selected job's report, its plots fetched through the API (a click on a row
        never starts a backend: with none connected there is nothing to show)."""
        job_id = self.dock.selected_job()
        client = self.connected() if job_id is not None else None
        if job_id is None or client is None:
            return
        try:
            job = client.job(job_id)
            images = self._plots(client, job)
        except BackendError as exc:
            self.dock.report.text.setText(f"could not fetch the report: {exc}")
            return
        self.jobs[job_id] = job
        self.dock.report.show_job(job, images, self.folder_of(job), list(self.jobs.values()))

    @staticmethod
    def _plots(client: BackendClient, job: dict) -> dict[str, bytes]:
        if job.get("state") != "succeeded":
            return {}
        listed = {f["name"] for f in client.job_files(job["id"])}
        return {name: client.file_bytes(job["id"], name) for name in PLOTS if name in listed}

    def folder_of(self, job: dict) -> str | None:
        """The job's output folder on this machine (a remote backend's are not here)."""
        out = (job.get("params") or {}).get("out")
        if not out or not self.local():
            return None
        path = Path(str(out))
        folder = path if path.is_dir() else path.parent
        return str(folder) if folder.is_dir() else None

    def open_selected_folder(self) -> None:
        from qgis.PyQt.QtCore import QUrl
        from qgis.PyQt.QtGui import QDesktopServices

        job = self.jobs.get(self.dock.selected_job() or "")
        folder = self.folder_of(job) if job else None
        if folder is None:
            self.msg.error("the selected job has no output folder on this machine")
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(folder))


def _with_local_files(task: BackendJobTask) -> dict:
    """The job's info, its `files` those downloaded here when it ran remotely."""
    if not isinstance(task, RemoteJobTask) or task.download_to is None:
        return task.info
    outputs = dict(task.info.get("outputs") or {})
    outputs["files"] = task.local_files
    return {**task.info, "outputs": outputs, "transfer_s": task.transfer_s}


def job_title(job: dict) -> str:
    params = job.get("params") or {}
    target = params.get("out") or params.get("raster") or params.get("source") or ""
    return f"{job.get('type', 'job')} {Path(str(target)).name}".strip()
