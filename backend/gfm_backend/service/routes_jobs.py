"""`/jobs` and `/job-types`: submit, follow, cancel and resume jobs."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from .deps import ServiceState, service
from .job_files import JobFilesError, job_file, job_files
from .joblogs import log_tail, read_log
from .jobs import PLANNED, JobTypeError, get_job_type, job_types
from .params import ParamError
from .schemas import ERRORS, Job, JobFileList, JobList, JobRequest, JobState, JobTypeList
from .security import require_token
from .store import CANCELLED, FAILED, FINISHED, INTERRUPTED, JobRecord
from .users import Caller

LOG_TAIL_LINES = 20
LOG_MAX_BYTES = 5 * 2**20

router = APIRouter(dependencies=[Depends(require_token)], responses=ERRORS, tags=["jobs"])
State = Annotated[ServiceState, Depends(service)]
Who = Annotated[Caller, Depends(require_token)]  # FastAPI runs it once per request


def job_json(svc: ServiceState, record: JobRecord, tail: bool = False) -> dict[str, Any]:
    out = record.to_json()
    if tail:
        out["log_tail"] = log_tail(svc.config.job_log(record.id), LOG_TAIL_LINES)
    return out


@router.get("/job-types", response_model=JobTypeList)
def list_job_types() -> dict[str, Any]:
    """The job types this service runs, with their params (names, kinds, defaults)."""
    names = {t.name for t in job_types()}
    return {"types": [t.describe() for t in job_types()],
            "not_available": {k: v for k, v in PLANNED.items() if k not in names}}


@router.get("/jobs", response_model=JobList)
def list_jobs(svc: State, caller: Who, job_state: Annotated[JobState | None, Query(alias="state")] = None,
              type: Annotated[str | None, Query(max_length=64)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Jobs, newest first: the caller's own (an admin's: everyone's)."""
    owner = None if caller.admin else caller.name
    return {"jobs": [job_json(svc, r) for r in svc.store.list(job_state, type, limit, owner)],
            "counts": svc.store.counts()}


@router.post("/jobs", response_model=Job, status_code=201)
def submit(request: JobRequest, svc: State, caller: Who) -> JSONResponse:
    """Check the params (files exist, rasters open, model known), then queue the job."""
    job_type = get_job_type(request.type)
    params = job_type.validate(request.params, svc.resolvers_for(caller))
    _refuse_second_writer(svc, job_type.writes(params))
    record = svc.store.add(job_type.name, params, job_type.resource_for(params), job_type.resumable,
                           owner=caller.name)
    svc.dispatcher.note(record.id, f"queued {record.type} job with params {params}")
    svc.dispatcher.wake()
    return JSONResponse(job_json(svc, record), 201, headers={"Location": f"/jobs/{record.id}"})


def _refuse_second_writer(svc: ServiceState, folder: str | None) -> None:
    """Two jobs never write one folder: the second is refused (409), not queued."""
    if folder is None:
        return
    for job_state in ("queued", "running"):
        for other in svc.store.list(job_state, None, 100_000):
            try:
                writes = get_job_type(other.type).writes(other.params)
            except JobTypeError:
                continue
            if writes == folder:
                raise HTTPException(409, f"params.out: {folder}: job {other.id} ({job_state}) "
                                    "writes this folder; wait for it to end or choose another "
                                    "output folder")


@router.get("/jobs/{job_id}", response_model=Job)
async def get_job(job_id: str, svc: State, caller: Who) -> dict[str, Any]:
    """State, progress, message, outputs, timings and the last lines of the log."""
    # async (on the event loop): one indexed SQLite read and a 16 KiB file read are
    # quicker than the hop through the thread pool, and this is what clients poll
    return job_json(svc, svc.record(job_id, caller), tail=True)


@router.get("/jobs/{job_id}/log", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}}})
def get_log(job_id: str, svc: State, caller: Who,
            tail: Annotated[int | None, Query(ge=1, le=100_000)] = None) -> str:
    """The job's log (its messages, warnings and, on failure, the traceback)."""
    text = read_log(svc.config.job_log(svc.record(job_id, caller).id), LOG_MAX_BYTES)
    if tail is not None:
        text = "\n".join(text.splitlines()[-tail:]) + "\n"
    return text


@router.post("/jobs/{job_id}/cancel", response_model=Job, status_code=202)
def cancel(job_id: str, svc: State, caller: Who) -> dict[str, Any]:
    """Ask a queued or running job to stop; it ends `cancelled`, its partial outputs gone."""
    record = svc.record(job_id, caller)
    if record.state in FINISHED:
        raise HTTPException(409, f"job {job_id} has already ended ({record.state})")
    svc.dispatcher.cancel(job_id)
    return job_json(svc, svc.record(job_id))


@router.post("/jobs/{job_id}/resume", response_model=Job, status_code=202)
def resume(job_id: str, svc: State, caller: Who) -> dict[str, Any]:
    """Queue an interrupted (or failed, cancelled) resumable job again with `resume: true`:
    it carries on from its last checkpoint."""
    record = svc.record(job_id, caller)
    try:
        job_type = get_job_type(record.type)
    except JobTypeError as exc:
        raise HTTPException(409, str(exc)) from exc
    if not job_type.resumable:
        raise HTTPException(409, f"{record.type} jobs cannot be resumed; submit the job again")
    if record.state not in (INTERRUPTED, FAILED, CANCELLED):
        raise HTTPException(409, f"job {job_id} is {record.state}; only an interrupted, failed "
                            "or cancelled job can be resumed")
    try:
        params = job_type.validate({**record.params, "resume": True}, svc.resolvers_for(caller))
    except ParamError as exc:
        raise HTTPException(409, f"cannot resume: {exc}") from exc
    svc.store.requeue(job_id, params, "resumed; waiting for its turn")
    svc.dispatcher.note(job_id, "resume requested")
    svc.dispatcher.wake()
    return job_json(svc, svc.record(job_id))


@router.get("/jobs/{job_id}/files", response_model=JobFileList)
def list_files(job_id: str, svc: State, caller: Who) -> dict[str, Any]:
    """What a succeeded job wrote (its results, model package, report and plots), with sizes
    and SHA-256, to fetch with `GET /jobs/{id}/files/{name}`."""
    record = svc.record(job_id, caller)
    try:
        files = job_files(record)
    except JobFilesError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return {"job": record.id, "files": [
        {"name": f.name, "size": f.path.stat().st_size, "sha256": svc.hashes.sha256(f.path)}
        for f in files]}


@router.get("/jobs/{job_id}/files/{name:path}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}},
                       206: {"description": "the byte range asked for (HTTP Range)"}})
def get_file(job_id: str, name: str, svc: State, caller: Who) -> FileResponse:
    """One of the job's files; `Range: bytes=N-` resumes a broken download."""
    record = svc.record(job_id, caller)
    try:
        entry = job_file(record, name)
    except JobFilesError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return FileResponse(entry.path, filename=PurePosixPath(entry.name).name,
                        media_type=_media_type(entry.name))


def _media_type(name: str) -> str:
    types = {".png": "image/png", ".json": "application/json", ".tif": "image/tiff"}
    return types.get(PurePosixPath(name).suffix.lower(), "application/octet-stream")
