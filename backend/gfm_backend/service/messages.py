"""What the dispatcher and its workers say to each other over their pipes: one frozen
dataclass per message (pickled by multiprocessing), so both sides name the same fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


# ------------------------------------------------------------- dispatcher -> worker
@dataclass(frozen=True)
class Run:
    job_id: str
    job_type: str
    params: dict[str, Any]
    log_path: str
    threads: int
    env: dict[str, str] | None = None  # set for this run only (a rank's torch.distributed settings)


@dataclass(frozen=True)
class Cancel:
    job_id: str


@dataclass(frozen=True)
class Quit:
    pass


Command = Run | Cancel | Quit


# ------------------------------------------------------------- worker -> dispatcher
@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class Progressed:
    job_id: str
    fraction: float
    message: str


@dataclass(frozen=True)
class Done:
    job_id: str
    outputs: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    job_id: str
    message: str


@dataclass(frozen=True)
class Stopped:
    """The job saw a cancel (or its server going) and ended; partial outputs discarded."""

    job_id: str
    message: str


Event = Heartbeat | Progressed | Done | Failed | Stopped
