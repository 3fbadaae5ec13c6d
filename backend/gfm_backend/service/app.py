"""The HTTP API (FastAPI; the OpenAPI schema is at /openapi.json, with the token).

Routes live in routers (`routes_jobs`, `routes_service`) and get what they share through
`Depends` (`deps.ServiceState` on `app.state`); handlers are thin: they check input, read
the job store and hand state changes to the dispatcher. Every error body is
`{"detail": "<message a user can act on>"}` (`handlers`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .. import __version__
from ..parameters import job_request_schema
from . import handlers, routes_files, routes_jobs, routes_service, routes_weights
from .deps import ServiceState
from .jobs import job_types
from .security import HostGuard

__all__ = ["ServiceState", "create_app"]

DESCRIPTION = ("Local job service of the GFM QGIS plugin: classify rasters, fine-tune and export "
               "models, build GeoPiles and pretrain, in worker processes. Authenticate with the "
               "bearer token from server.json.")


def create_app(service: ServiceState) -> FastAPI:
    """The ASGI app: HostGuard around FastAPI; every route but /health needs the token."""
    app = FastAPI(title="GFM backend", version=__version__, description=DESCRIPTION,
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.service = service
    handlers.install(app)
    app.include_router(routes_service.public)
    app.include_router(routes_jobs.router)
    app.include_router(routes_service.private)
    app.include_router(routes_weights.router)
    app.include_router(routes_files.router)
    _document_job_requests(app)
    app.add_middleware(HostGuard, bind_host=service.config.host, extra=service.config.allow_hosts)
    return app


def _document_job_requests(app: FastAPI) -> None:
    """The schema shows `POST /jobs`'s body as what it is: a union of the job types' params
    (made from their models, plugins included), not a free-form object. The handler still
    checks params itself, so every mistake gets a 400 naming the field in the same words."""

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
