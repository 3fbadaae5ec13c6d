"""A slot: one place a job (or one rank of a job) runs, and the worker process behind it.

The dispatcher decides what runs where; a slot only knows how to start, talk to and stop
its own worker, which is started on first use and kept warm between jobs.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess

from .config import ServiceConfig
from .messages import Command, Quit
from .rank_group import RankGroup
from .worker import worker_main

log = logging.getLogger("gfm_backend.service")


def crash_message(exitcode: int | None) -> str:
    """Why a worker died, in words; a SIGKILL is almost always the out-of-memory killer."""
    tail = " The service is still running; the job log may say more."
    if exitcode == -signal.SIGKILL:
        return ("the job's worker process was killed (SIGKILL), most likely because the "
                "computer ran out of memory; try a smaller batch_size or raster, or close "
                "other programs." + tail)
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the job's worker process crashed ({name})." + tail
    return f"the job's worker process stopped unexpectedly (exit code {exitcode})." + tail


@dataclass
class Slot:
    """One place a job can run; its worker process is started on first use and kept warm."""

    lane: str
    index: int
    device: int | None = None  # the GPU a gpu-lane slot places its jobs on (None: theirs)
    process: BaseProcess | None = None
    commands: Connection | None = None
    events: Connection | None = None
    job_id: str | None = None
    deadline: float | None = None  # when a cancelled or interrupted job gets stopped by force
    stop_state: str | None = None  # CANCELLED or INTERRUPTED once a stop was asked for
    last_heard: float = 0.0  # monotonic time of the worker's last message
    group: RankGroup | None = None  # the ranks of a split job this slot runs one of
    rank: int = 0

    @property
    def name(self) -> str:
        return f"{self.lane}-{self.index}" + ("" if self.device is None else f" (cuda:{self.device})")

    @property
    def running(self) -> bool:
        """Its job (or its rank of one) has not ended yet."""
        return self.job_id is not None and (self.group is None or not self.group.ended(self.rank))

    def free(self) -> None:
        self.job_id, self.deadline, self.stop_state = None, None, None
        self.group, self.rank = None, 0

    def spawn(self, ctx: SpawnContext, config: ServiceConfig) -> None:
        cmd_r, cmd_w = ctx.Pipe(duplex=False)
        evt_r, evt_w = ctx.Pipe(duplex=False)
        process = ctx.Process(target=worker_main, args=(cmd_r, evt_w, config.cancel_grace_s,
                                                          str(config.state_dir)),
                              name=f"gfm-worker-{self.name}", daemon=False)
        process.start()
        cmd_r.close()  # our copies of the child's ends: their closing is how each side
        evt_w.close()  # notices the other has gone
        self.process, self.commands, self.events = process, cmd_w, evt_r
        log.info("worker %s started (pid %d)", self.name, process.pid)

    def send(self, msg: Command) -> None:
        try:
            assert self.commands is not None
            self.commands.send(msg)
        except (OSError, ValueError, AssertionError):
            pass  # a dead worker is noticed through its sentinel

    def quit(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.send(Quit())
            self.process.join(5)
        self.kill()
        self.close()

    def kill(self) -> None:
        process = self.process
        if process is None or not process.is_alive():
            return
        process.terminate()
        process.join(3)
        if process.is_alive():
            process.kill()
            process.join(3)

    def close(self) -> None:
        for conn in (self.commands, self.events):
            if conn is not None:
                conn.close()
        if self.process is not None and not self.process.is_alive():
            self.process.close()
        self.process = self.commands = self.events = None
