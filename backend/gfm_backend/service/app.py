"""The HTTP API (FastAPI; the OpenAPI schema is at /openapi.json, with the token).

Handlers are thin: they check input, read the job store and hand state changes to the
dispatcher. Every error body is `{"detail": "<message a user can act on>"}`.
"""

from __future__ import annotations

import errno
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..errors import GfmError
from ..parameters import job_request_schema
from .catalog import find_model, list_models
from .config import API_VERSION, ServiceConfig
from .devices import DeviceProbe, disk_free_gb
from .dispatcher import Dispatcher
from .joblogs import log_tail, read_log
from .jobs import PLANNED, JobTypeError, get_job_type, job_types
from .params import ParamError
from .security import HostGuard, bearer_auth, token_matches
from .store import CANCELLED, FAILED, FINISHED, INTERRUPTED, STATES, JobRecord, JobStore

LOG_TAIL_LINES = 20
LOG_MAX_BYTES = 5 * 2**20
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
assert set(JobState.__args__) == set(STATES)  # type: ignore[attr-defined]


@dataclass
class ServiceState:
    """What the handlers share: one per server process."""

    config: ServiceConfig
    store: JobStore
    dispatcher: Dispatcher
    devices: DeviceProbe
    token: str
    started_at: float


# ------------------------------------------------------------------------------ schemas
class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="classify, finetune, export, geopile or pretrain; GET "
                      "/job-types lists the types and their params",
                      examples=["classify"])
    params: dict[str, Any] = Field(default_factory=dict, description="the CLI's names: "
                                   "positional arguments in lower case, options without dashes",
                                   examples=[{"raster": "/data/scene.tif", "model": "/models/tiny",
                                              "out": "/data/classified"}])


class Timings(BaseModel):
    created: str | None
    started: str | None
    finished: str | None
    queued_s: float | None
    run_s: float | None


class Job(BaseModel):
    id: str
    type: str
    state: JobState
    progress: float = Field(ge=0, le=1)
    message: str
    outputs: dict[str, Any] | None
    params: dict[str, Any]
    resource: str
    resumable: bool
    cancel_requested: bool
    attempts: int
    worker_pid: int | None
    timings: Timings
    log_tail: list[str] | None = None


class JobList(BaseModel):
    jobs: list[Job]
    counts: dict[str, int]


class Health(BaseModel):
    status: str
    version: str
    api_version: int
    devices: list[dict[str, Any]]
    default_device: str
    device_probe: str
    torch: str | None = None  # this and below: only with the token
    disk_free_gb: float | None = None
    uptime_s: float | None = None


class ModelList(BaseModel):
    models: list[dict[str, Any]]


class JobTypeList(BaseModel):
    types: list[dict[str, Any]]
    not_available: dict[str, str]


class Error(BaseModel):
    detail: str
    field: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "bad input (the message names the field or file)"},
    401: {"model": Error, "description": "missing or wrong token"},
    404: {"model": Error, "description": "no such job"},
    409: {"model": Error, "description": "not possible in the job's current state"},
    422: {"model": Error, "description": "malformed request"},
    507: {"model": Error, "description": "the service's state folder is full"},
}


# ------------------------------------------------------------------------------ helpers
def _not_found(job_id: str) -> HTTPException:
    return HTTPException(404, f"no job with id {job_id!r} (GET /jobs lists them)")


def _document_job_requests(app: FastAPI) -> None:
    """The schema shows `POST /jobs`'s body as what it is: a union of the job types' params
    (made from their models, plugins included), not a free-form object. The handler still
    checks params itself, so every mistake gets a 400 naming the field in the same words."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            body = job_request_schema([(t.name, t.params) for t in job_types()])
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(body.pop("$defs", {}))
            components["JobRequest"] = body | {"title": "JobRequest", "description":
                                               "a job type and its params; GET /job-types lists them"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(service: ServiceState) -> FastAPI:
    """The ASGI app: HostGuard around FastAPI; every route but /health needs the token."""
    app = FastAPI(title="GFM backend", version=__version__, openapi_url=None, docs_url=None,
                  redoc_url=None,
                  description="Local job service of the GFM QGIS plugin: classify rasters, "
                  "fine-tune and export models, build GeoPiles and pretrain, in worker "
                  "processes. Authenticate with the bearer token from server.json.")
    store, dispatcher, config = service.store, service.dispatcher, service.config

    @app.exception_handler(GfmError)
    async def gfm_error(_: Request, exc: GfmError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "field": getattr(exc, "field", None)}, 400)

    @app.exception_handler(sqlite3.Error)
    async def store_error(_: Request, exc: sqlite3.Error) -> JSONResponse:
        return _store_unavailable(exc)

    @app.exception_handler(OSError)
    async def os_error(_: Request, exc: OSError) -> JSONResponse:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _store_unavailable(exc)
        raise exc

    def _store_unavailable(exc: BaseException) -> JSONResponse:
        """A full disk under the state folder is the operator's to fix: 507 while it lasts."""
        full = "full" in str(exc) or isinstance(exc, OSError)
        detail = (f"the service's state folder {config.state_dir} is full ({exc}): free some "
                  "space there and try again; running jobs go on" if full else
                  f"the job store is not available right now ({exc}); try again shortly")
        return JSONResponse({"detail": detail}, 507 if full else 503)

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "malformed request"
        return JSONResponse({"detail": detail, "errors": errors}, 422)

    @app.get("/health", response_model=Health, response_model_exclude_none=True, tags=["service"])
    async def health(request: Request) -> dict[str, Any]:
        """Version and devices (names only) for anyone; with the token also the torch build,
        memory, free disk and uptime, which are nobody else's business."""
        snapshot = service.devices.snapshot()
        public = {"status": "ok", "version": __version__, "api_version": API_VERSION,
                  "default_device": snapshot["default_device"],
                  "device_probe": snapshot["device_probe"],
                  "devices": [{"type": d.get("type"), "name": d.get("name")}
                              for d in snapshot["devices"]]}
        if not token_matches(request.headers.get("authorization"), service.token):
            return public
        return public | snapshot | {"disk_free_gb": disk_free_gb(config.state_dir),
                                    "uptime_s": round(time.time() - service.started_at, 1)}

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(bearer_auth(service.token))])
    async def openapi_schema() -> JSONResponse:
        """The schema needs the token like every route but /health. The interactive /docs and
        /redoc pages are off: they load their scripts from a CDN an offline service cannot
        reach, and could not send the token; open this schema in any OpenAPI viewer."""
        return JSONResponse(app.openapi())

    api = APIRouter(dependencies=[Depends(bearer_auth(service.token))], responses=ERRORS)

    def job_json(record: JobRecord, tail: bool = False) -> dict[str, Any]:
        out = record.to_json()
        if tail:
            out["log_tail"] = log_tail(config.job_log(record.id), LOG_TAIL_LINES)
        return out

    def get_record(job_id: str) -> JobRecord:
        record = store.get(job_id)
        if record is None:
            raise _not_found(job_id)
        return record

    @api.get("/job-types", response_model=JobTypeList, tags=["jobs"])
    def list_job_types() -> dict[str, Any]:
        """The job types this service runs, with their params (names, kinds, defaults)."""
        names = {t.name for t in job_types()}
        return {"types": [t.describe() for t in job_types()],
                "not_available": {k: v for k, v in PLANNED.items() if k not in names}}

    @api.get("/jobs", response_model=JobList, tags=["jobs"])
    def list_jobs(state: JobState | None = None, type: str | None = Query(None, max_length=64),
                  limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        """Jobs, newest first."""
        return {"jobs": [job_json(r) for r in store.list(state, type, limit)],
                "counts": store.counts()}

    @api.post("/jobs", response_model=Job, status_code=201, tags=["jobs"])
    def submit(request: JobRequest) -> JSONResponse:
        """Check the params (files exist, rasters open, model known), then queue the job."""
        job_type = get_job_type(request.type)
        params = job_type.validate(request.params, lambda n: find_model(n, config.model_dirs))
        _refuse_second_writer(job_type.writes(params))
        record = store.add(job_type.name, params, job_type.resource_for(params), job_type.resumable)
        dispatcher.note(record.id, f"queued {record.type} job with params {params}")
        dispatcher.wake()
        return JSONResponse(job_json(record), 201, headers={"Location": f"/jobs/{record.id}"})

    def _refuse_second_writer(folder: str | None) -> None:
        """Two jobs never write one folder: the second is refused (409), not queued."""
        if folder is None:
            return
        for state in ("queued", "running"):
            for other in store.list(state, None, 100_000):
                try:
                    if get_job_type(other.type).writes(other.params) == folder:
                        raise HTTPException(409, f"params.out: {folder}: job {other.id} ({state}) "
                                            "writes this folder; wait for it to end or choose "
                                            "another output folder")
                except JobTypeError:
                    continue

    @api.get("/jobs/{job_id}", response_model=Job, tags=["jobs"])
    async def get_job(job_id: str) -> dict[str, Any]:
        """State, progress, message, outputs, timings and the last lines of the log."""
        # async (on the event loop): one indexed SQLite read and a 16 KiB file read are
        # quicker than the hop through the thread pool, and this is what clients poll
        return job_json(get_record(job_id), tail=True)

    @api.get("/jobs/{job_id}/log", response_class=PlainTextResponse, tags=["jobs"],
             responses={200: {"content": {"text/plain": {}}}})
    def get_log(job_id: str, tail: int | None = Query(None, ge=1, le=100_000)) -> str:
        """The job's log (its messages, warnings and, on failure, the traceback)."""
        path = config.job_log(get_record(job_id).id)
        text = read_log(path, LOG_MAX_BYTES)
        if tail is not None:
            text = "\n".join(text.splitlines()[-tail:]) + "\n"
        return text

    @api.post("/jobs/{job_id}/cancel", response_model=Job, status_code=202, tags=["jobs"])
    def cancel(job_id: str) -> dict[str, Any]:
        """Ask a queued or running job to stop; it ends `cancelled`, its partial outputs gone."""
        record = get_record(job_id)
        if record.state in FINISHED:
            raise HTTPException(409, f"job {job_id} has already ended ({record.state})")
        dispatcher.cancel(job_id)
        return job_json(get_record(job_id))

    @api.post("/jobs/{job_id}/resume", response_model=Job, status_code=202, tags=["jobs"])
    def resume(job_id: str) -> dict[str, Any]:
        """Queue an interrupted (or failed, cancelled) resumable job again with `resume: true`:
        it carries on from its last checkpoint."""
        record = get_record(job_id)
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
            params = job_type.validate({**record.params, "resume": True},
                                       lambda n: find_model(n, config.model_dirs))
        except ParamError as exc:
            raise HTTPException(409, f"cannot resume: {exc}") from exc
        store.requeue(job_id, params, "resumed; waiting for its turn")
        dispatcher.note(job_id, "resume requested")
        dispatcher.wake()
        return job_json(get_record(job_id))

    @api.get("/models", response_model=ModelList, tags=["models"])
    def models() -> dict[str, Any]:
        """Model packages with their model.json: the models folders, then fine-tune outputs."""
        finetuned = [(r.id, Path(r.params["out"]))
                     for r in store.list("succeeded", "finetune", 1000) if "out" in r.params]
        return {"models": list_models(config.model_dirs, finetuned)}

    app.include_router(api)
    _document_job_requests(app)
    app.add_middleware(HostGuard, bind_host=config.host, extra=config.allow_hosts)
    return app
