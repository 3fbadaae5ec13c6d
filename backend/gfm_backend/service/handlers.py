"""Every error answer is `{"detail": "<message a user can act on>"}`, never a traceback."""

from __future__ import annotations

import errno
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import GfmError


async def user_error(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "field": getattr(exc, "field", None)},
                        getattr(exc, "status", 400))


def store_unavailable(request: Request, exc: BaseException) -> JSONResponse:
    """A full disk under the state folder is the operator's to fix: 507 while it lasts."""
    state_dir = request.app.state.service.config.state_dir
    full = "full" in str(exc) or isinstance(exc, OSError)
    detail = (f"the service's state folder {state_dir} is full ({exc}): free some space there "
              "and try again; running jobs go on" if full else
              f"the job store is not available right now ({exc}); try again shortly")
    return JSONResponse({"detail": detail}, 507 if full else 503)


async def store_error(request: Request, exc: Exception) -> JSONResponse:
    return store_unavailable(request, exc)


async def os_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return store_unavailable(request, exc)
    raise exc


async def malformed(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
               "type": str(e.get("type", ""))} for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "malformed request"
    return JSONResponse({"detail": detail, "errors": errors}, 422)


def install(app: FastAPI) -> None:
    app.add_exception_handler(GfmError, user_error)
    app.add_exception_handler(sqlite3.Error, store_error)
    app.add_exception_handler(OSError, os_error)
    app.add_exception_handler(RequestValidationError, malformed)
