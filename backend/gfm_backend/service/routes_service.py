"""`/health`, `/models` and `/openapi.json`: what the service is, and what it can run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from .. import __version__
from ..outputs import MODEL
from .catalog import list_models
from .config import API_VERSION
from .deps import ServiceState, service
from .device_probe import disk_free_gb
from .jobs import job_types
from .schemas import ERRORS, Health, ModelList
from .security import require_token, token_matches

public = APIRouter(tags=["service"])
private = APIRouter(dependencies=[Depends(require_token)], responses=ERRORS)
State = Annotated[ServiceState, Depends(service)]


@public.get("/health", response_model=Health, response_model_exclude_none=True)
async def health(request: Request, svc: State) -> dict[str, Any]:
    """Version and devices (names only) for anyone; with the token also the torch build,
    memory, free disk and uptime, which are nobody else's business."""
    snapshot = svc.devices.snapshot()
    shown = {"status": "ok", "version": __version__, "api_version": API_VERSION,
             "default_device": snapshot["default_device"], "device_probe": snapshot["device_probe"],
             "devices": [{"type": d.get("type"), "name": d.get("name")} for d in snapshot["devices"]]}
    if not token_matches(request.headers.get("authorization"), svc.token):
        return shown
    return shown | snapshot | {"disk_free_gb": disk_free_gb(svc.config.state_dir),
                               "uptime_s": round(time.time() - svc.started_at, 1)}


@private.get("/openapi.json", include_in_schema=False)
async def openapi_schema(request: Request) -> JSONResponse:
    """The schema needs the token like every route but /health. The interactive /docs and
    /redoc pages are off: they load their scripts from a CDN an offline service cannot
    reach, and could not send the token; open this schema in any OpenAPI viewer."""
    return JSONResponse(request.app.openapi())


@private.get("/models", response_model=ModelList, tags=["models"])
def models(svc: State) -> dict[str, Any]:
    """Model packages with their model.json: the models folders, then fine-tune outputs."""
    trainers = [t.name for t in job_types() if t.output is MODEL]  # the jobs that write models
    finetuned = [(r.id, Path(r.params["out"])) for name in trainers
                 for r in svc.store.list("succeeded", name, 1000) if "out" in r.params]
    return {"models": list_models(svc.config.model_dirs, finetuned)}
