"""The shapes of the HTTP API's requests and answers (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .store import STATES

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
assert set(JobState.__args__) == set(STATES)  # type: ignore[attr-defined]


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
    owner: str | None = None
    log_tail: list[str] | None = None


class JobList(BaseModel):
    jobs: list[Job]
    counts: dict[str, int]


class JobFile(BaseModel):
    name: str = Field(description="path inside the job's output, '/' between parts")
    size: int
    sha256: str


class JobFileList(BaseModel):
    job: str
    files: list[JobFile]


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


class WeightsList(BaseModel):
    store: str
    installed: list[dict[str, Any]]
    catalog: list[dict[str, Any]]


class JobTypeList(BaseModel):
    types: list[dict[str, Any]]
    not_available: dict[str, str]


class Error(BaseModel):
    detail: str
    field: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "bad input (the message names the field or file)"},
    401: {"model": Error, "description": "missing or wrong token"},
    403: {"model": Error, "description": "not this user's to change"},
    404: {"model": Error, "description": "no such job"},
    409: {"model": Error, "description": "not possible in the job's current state"},
    422: {"model": Error, "description": "malformed request"},
    507: {"model": Error, "description": "the service's state folder is full"},
}
