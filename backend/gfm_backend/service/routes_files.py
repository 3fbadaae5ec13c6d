"""`/files`: uploads a job can name as `{"file": ID}` (see `uploads`).

One request: `POST /files` with the file as the raw body (`Content-Type:
application/octet-stream`, the name in `X-Filename`, optionally its hash in `X-Sha256`),
answered `{"id", "sha256", "size"}`. Content the service has already: `POST /files` with
`X-Sha256`, `Content-Range: bytes */TOTAL` and no body answers 200 at once. In pieces, or
resuming a broken upload: the first `POST` (or that empty one) answers 202 with the id and
`received`; each `PUT /files/{id}` sends `Content-Range: bytes START-END/TOTAL` from
`received` on (`GET /files/{id}` says how much arrived after a broken connection).
Bodies are streamed to disk, never held in memory.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from .deps import ServiceState, service
from .schemas import ERRORS
from .security import require_token
from .uploads import Upload, UploadError, UploadStore
from .users import Caller

router = APIRouter(dependencies=[Depends(require_token)], responses=ERRORS, tags=["files"])
State = Annotated[ServiceState, Depends(service)]
Who = Annotated[Caller, Depends(require_token)]
_RANGE = re.compile(r"^bytes (?:(\d+)-(\d+)|\*)/(\d+)$")
# a body that stops arriving for this long is treated as a broken connection (resumable)
IDLE_S = float(os.environ.get("GFM_UPLOAD_IDLE_S", "120"))
# the body is raw bytes: declared here so clients (and schema-driven tests) send one, with
# its own Content-Length, instead of a Content-Length header parameter that could lie
RAW_BODY = {"requestBody": {"required": False, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def _body_length(request: Request) -> int | None:
    """The body's announced size (HTTP's own header, not an API parameter)."""
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise UploadError(400, f"Content-Length: expected a byte count, got {value!r}")
    return int(value)


def _range(header: str | None, length: int | None) -> tuple[int, int, int]:
    """(start, end exclusive, total) from Content-Range, or the whole body's length."""
    if header is None:
        if length is None:
            raise UploadError(411, "give Content-Length (the file's size) or Content-Range")
        return 0, length, length
    found = _RANGE.match(header.strip())
    if not found:
        raise UploadError(400, f"Content-Range: expected 'bytes START-END/TOTAL' or "
                          f"'bytes */TOTAL', got {header!r}")
    total = int(found.group(3))
    if found.group(1) is None:
        return 0, 0, total
    start, end = int(found.group(1)), int(found.group(2)) + 1
    if not start < end <= total:
        raise UploadError(400, f"Content-Range: {header!r} is not a range inside the file")
    return start, end, total


def _answer(upload: Upload, created: bool = False) -> JSONResponse:
    body = upload.public()
    status = (201 if created else 200) if upload.complete else 202
    return JSONResponse(body, status, headers={"Location": f"/files/{upload.id}"})


async def _receive(request: Request, store: UploadStore, upload: Upload, start: int,
                   end: int) -> Upload:
    """Append the body to the staged file; a broken connection keeps what arrived."""
    expected = end - start
    got = 0
    chunks = request.stream().__aiter__()
    with store.partial_file(upload).open("ab") as out:
        try:
            while got <= expected:
                chunk = await asyncio.wait_for(chunks.__anext__(), IDLE_S)
                got += len(chunk)
                if got <= expected:
                    out.write(chunk)
        except (ClientDisconnect, StopAsyncIteration, TimeoutError):
            pass  # a stalled or broken connection keeps what arrived: resume from there
    if got > expected:
        await run_in_threadpool(store.discard, upload)
        raise UploadError(400, f"the body is longer than the {expected} bytes Content-Range "
                          "announced; the upload was discarded")
    return await run_in_threadpool(store.received, upload)


@router.post("/files", status_code=201, openapi_extra=RAW_BODY,
             responses={200: {"description": "content known"}, 202: {"description": "more to send"}})
async def upload_file(request: Request, svc: State, caller: Who,
                      x_filename: Annotated[str | None, Header()] = None,
                      x_sha256: Annotated[str | None, Header()] = None,
                      content_range: Annotated[str | None, Header()] = None) -> JSONResponse:
    """Upload a file (the raw body), in one request or the first of several."""
    store = svc.uploads
    try:
        start, end, total = _range(content_range, _body_length(request))
        if x_sha256 is not None:
            known = await run_in_threadpool(store.known, x_filename, x_sha256.lower(), caller.name)
            if known is not None:
                return _answer(known)
        if start != 0:
            raise UploadError(400, "Content-Range: a new upload starts at byte 0")
        upload = await run_in_threadpool(store.start, x_filename, total,
                                         x_sha256.lower() if x_sha256 else None, caller.name)
        if end > 0 or total == 0:
            upload = await _receive(request, store, upload, start, end)
    except UploadError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return _answer(upload, created=True)


@router.put("/files/{upload_id}", openapi_extra=RAW_BODY,
            responses={202: {"description": "more to send"}})
async def continue_upload(upload_id: str, request: Request, svc: State, caller: Who,
                          content_range: Annotated[str | None, Header()] = None) -> JSONResponse:
    """The next piece of an upload (`Content-Range: bytes START-END/TOTAL`)."""
    store = svc.uploads
    try:
        upload = await run_in_threadpool(store.get, upload_id, caller)
        if content_range is None:
            raise UploadError(400, "Content-Range: say which bytes this is (bytes START-END/TOTAL)")
        start, end, total = _range(content_range, None)
        store.check_range(upload, start, total)
        upload = await _receive(request, store, upload, start, end)
    except UploadError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return _answer(upload, created=upload.complete)


@router.delete("/files/{upload_id}")
def delete_upload(upload_id: str, svc: State, caller: Who) -> dict[str, Any]:
    """Forget one of your uploads (jobs already queued keep their copy)."""
    try:
        svc.uploads.delete(upload_id, caller)
    except UploadError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return {"deleted": upload_id}


@router.get("/files/{upload_id}")
def upload_state(upload_id: str, svc: State, caller: Who) -> dict[str, Any]:
    """How much of an upload arrived (resume from `received`), and its hash once complete."""
    try:
        return svc.uploads.received(svc.uploads.get(upload_id, caller)).public()
    except UploadError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
