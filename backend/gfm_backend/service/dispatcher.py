"""The server side of the workers: lanes of slots, first-come-first-served scheduling.

One thread owns every worker process and every state change of a running job: it
starts queued jobs on free slots (`gpu` lane: `gpu_jobs` at a time, one by default;
`cpu` lane: `cpu_jobs` beside it), records progress and results, turns a dead worker
into a failed job with a plain message, and carries out cancels (a flag the job's
`Progress` reads, then the process is stopped if it does not end within the grace).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing as mp
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from .config import ServiceConfig
from .gpu_lanes import accepts, placed
from .jobs import CPU, GPU
from .messages import Cancel, Command, Done, Event, Failed, Heartbeat, Progressed, Quit, Run, Stopped
from .store import CANCELLED, FAILED, INTERRUPTED, SUCCEEDED, JobRecord, JobStore
from .worker import worker_main

log = logging.getLogger("gfm_backend.service")
POLL_S = 0.5
STORE_ERRORS = (sqlite3.Error, OSError)  # a full or vanished disk under the state folder


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

    @property
    def name(self) -> str:
        return f"{self.lane}-{self.index}" + ("" if self.device is None else f" (cuda:{self.device})")


def _fits(device: int | None, devices: list[int], record: JobRecord) -> bool:
    return accepts(device, record.params, devices)


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


class Dispatcher:
    """Runs queued jobs in worker processes; all job state changes go through here."""

    def __init__(self, store: JobStore, config: ServiceConfig) -> None:
        self.store, self.config = store, config
        self._ctx = mp.get_context("spawn")
        devices: list[int | None] = list(config.gpu_devices or []) or [None]
        gpu = [(d, i) for d in devices for i in range(config.gpu_jobs)]
        self._slots = ([Slot(GPU, n, device=d) for n, (d, _) in enumerate(gpu)]
                       + [Slot(CPU, i) for i in range(config.cpu_jobs)])
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._cancels: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._deferred: list[tuple[Callable[..., None], str, tuple]] = []
        self._thread = threading.Thread(target=self._loop, name="gfm-dispatcher", daemon=True)

    # ------------------------------------------------------------------ called by the API
    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"!")

    def cancel(self, job_id: str) -> None:
        self.store.request_cancel(job_id)
        with self._lock:
            self._cancels.add(job_id)
        self.wake()

    def stop(self, timeout: float | None = None) -> None:
        """Stop running jobs (they end `interrupted`), then the workers; queued jobs stay queued."""
        self._stopping.set()
        self.wake()
        self._thread.join(timeout if timeout is not None else self.config.cancel_grace_s + 15)
        for slot in self._slots:
            self._kill(slot)

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        stop_seen = False
        while True:
            try:
                if self._stopping.is_set() and not stop_seen:
                    stop_seen = True
                    for slot in self._slots:
                        if slot.job_id and slot.stop_state is None:  # a cancel stays a cancel
                            self._ask_to_stop(slot, INTERRUPTED)
                self._flush_deferred()
                self._wait_and_handle()
                self._apply_cancels()
                self._enforce_deadlines()
                if stop_seen:
                    if not any(s.job_id for s in self._slots):
                        break
                else:
                    self._schedule()
            except Exception:  # the loop must outlive any bug in one step
                log.exception("job dispatcher error")
                time.sleep(POLL_S)
        for slot in self._slots:
            self._quit(slot)

    def _wait_and_handle(self) -> None:
        waitables: list[Any] = [self._wake_r]
        for slot in self._slots:
            if slot.events is not None:
                waitables.append(slot.events)
            if slot.process is not None:
                waitables.append(slot.process.sentinel)
        ready = wait(waitables, timeout=POLL_S)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        for slot in self._slots:
            while slot.events is not None and slot.events in ready:
                try:
                    if not slot.events.poll():
                        break
                    self._handle(slot, slot.events.recv())
                except (EOFError, OSError):
                    break
            if slot.process is not None and not slot.process.is_alive():
                self._worker_died(slot)

    def _handle(self, slot: Slot, msg: Event) -> None:
        slot.last_heard = time.monotonic()
        if isinstance(msg, Heartbeat) or msg.job_id != slot.job_id:
            return  # a late message from a job already settled (e.g. stopped by force)
        if isinstance(msg, Progressed):
            with contextlib.suppress(*STORE_ERRORS):  # progress is not worth keeping for later
                self.store.set_progress(msg.job_id, msg.fraction, msg.message)
        elif isinstance(msg, Done):
            record = self.store.get(msg.job_id)
            took = time.time() - record.started_at if record and record.started_at else 0.0
            self._settle(slot, SUCCEEDED, f"done in {took:.1f} s", msg.outputs)
        elif isinstance(msg, Failed):
            self._settle(slot, FAILED, msg.message)
        elif isinstance(msg, Stopped):
            if slot.stop_state == INTERRUPTED:
                self._settle(slot, INTERRUPTED, self._interrupted_message(msg.job_id))
            else:
                self._settle(slot, CANCELLED, "cancelled; partial outputs were discarded")

    def _interrupted_message(self, job_id: str) -> str:
        record = self.store.get(job_id)
        how = (f" Resume it with POST /jobs/{job_id}/resume." if record and record.resumable
               else " Submit it again to redo it.")
        return "interrupted: the service was stopped while this job was running." + how

    def _settle(self, slot: Slot, state: str, message: str, outputs: dict | None = None) -> None:
        job_id = slot.job_id
        assert job_id is not None
        self._write(self.store.finish, job_id, state, message, outputs)
        self.note(job_id, f"{state}: {message}")
        log.info("job %s %s: %s", job_id, state, message)
        slot.job_id, slot.deadline, slot.stop_state = None, None, None
        with self._lock:
            self._cancels.discard(job_id)

    def _worker_died(self, slot: Slot) -> None:
        assert slot.process is not None
        code = slot.process.exitcode
        log.warning("worker %s (pid %s) exited with code %s", slot.name, slot.process.pid, code)
        if slot.job_id:
            if slot.stop_state:
                message = ("cancelled; partial outputs were discarded" if slot.stop_state == CANCELLED
                           else self._interrupted_message(slot.job_id))
                self._settle(slot, slot.stop_state, message)
            else:
                self._settle(slot, FAILED, crash_message(code))
        self._close(slot)

    def _apply_cancels(self) -> None:
        with self._lock:
            pending, self._cancels = self._cancels, set()
        on_slot = {s.job_id: s for s in self._slots if s.job_id}
        for job_id in pending:
            if job_id in on_slot:
                if on_slot[job_id].stop_state is None:
                    self._ask_to_stop(on_slot[job_id], CANCELLED)
                continue
            record = self.store.get(job_id)
            if record is not None and record.state == "queued":
                self._write(self.store.finish, job_id, CANCELLED, "cancelled before it started")
                self.note(job_id, "cancelled before it started")

    def _ask_to_stop(self, slot: Slot, state: str) -> None:
        assert slot.job_id is not None
        slot.stop_state = state
        slot.deadline = time.monotonic() + self.config.cancel_grace_s
        self._send(slot, Cancel(slot.job_id))
        self.note(slot.job_id, "cancel requested" if state == CANCELLED
                      else "the service is stopping; asking the job to stop")

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        self._enforce_heartbeats(now)
        for slot in self._slots:
            if slot.job_id and slot.deadline is not None and now > slot.deadline:
                log.warning("job %s did not stop within %.0f s; stopping its worker",
                            slot.job_id, self.config.cancel_grace_s)
                self._kill(slot)
                state = slot.stop_state or CANCELLED
                message = (f"cancelled (the job did not stop by itself within "
                           f"{self.config.cancel_grace_s:g} s, so its worker was stopped)"
                           if state == CANCELLED else self._interrupted_message(slot.job_id))
                self._settle(slot, state, message)
                self._close(slot)

    def _enforce_heartbeats(self, now: float) -> None:
        limit = self.config.heartbeat_timeout_s
        for slot in self._slots:
            if slot.job_id and slot.stop_state is None and now - slot.last_heard > limit:
                log.warning("job %s: no heartbeat from worker %s for %.0f s; stopping it",
                            slot.job_id, slot.name, now - slot.last_heard)
                self._kill(slot)
                self._settle(slot, FAILED, f"the job's worker stopped responding (no heartbeat "
                             f"for {limit:g} s: stopped, hung or swapping), so it was killed. "
                             "The service is still running; submit the job again.")
                self._close(slot)

    def _write(self, fn: Callable[..., None], job_id: str, *args: Any) -> None:
        """A job-state write that survives a full disk: a write that fails is kept, in order,
        and retried until it goes through, so no job stays `running` for good."""
        if not self._deferred:
            try:
                fn(job_id, *args)
                return
            except STORE_ERRORS as exc:
                log.warning("cannot record job %s now (%s); it will be recorded when the state "
                            "folder %s has room again", job_id, exc, self.config.state_dir)
        self._deferred.append((fn, job_id, args))

    def _flush_deferred(self) -> None:
        while self._deferred:
            fn, job_id, args = self._deferred[0]
            try:
                fn(job_id, *args)
            except STORE_ERRORS:
                return
            self._deferred.pop(0)
            if not self._deferred:
                log.info("the job records are up to date again")

    def _schedule(self) -> None:
        devices = self.config.gpu_devices or []
        for slot in self._slots:
            if slot.job_id is not None:
                continue
            busy = {s.job_id for s in self._slots if s.job_id} | {w[1] for w in self._deferred}
            record = self.store.next_queued(slot.lane, exclude=busy,
                                            accept=functools.partial(_fits, slot.device, devices))
            if record is None:
                continue
            self._start_job(slot, record.id, record.type, placed(slot.device, record.params))

    def _start_job(self, slot: Slot, job_id: str, job_type: str, params: dict[str, Any]) -> None:
        if slot.process is None or not slot.process.is_alive():
            self._close(slot)
            self._spawn(slot)
        assert slot.process is not None
        slot.job_id = job_id
        slot.last_heard = time.monotonic()
        self._write(self.store.mark_running, job_id, slot.process.pid)
        record = self.store.get(job_id)
        self.note(job_id, f"started (attempt {record.attempts if record else 1}) on "
                      f"{slot.name}, worker pid {slot.process.pid}")
        log.info("job %s (%s) started on %s", job_id, job_type, slot.name)
        self._send(slot, Run(job_id, job_type, params, str(self.config.job_log(job_id)),
                          self._threads_for_new_job()))

    def _threads_for_new_job(self) -> int:
        """A fair share of the cores: alone, a job gets them all; beside others, a part."""
        busy = sum(1 for s in self._slots if s.job_id)
        return max(1, (os.cpu_count() or 1) // max(busy, 1))

    # ------------------------------------------------------------------ processes
    def _spawn(self, slot: Slot) -> None:
        cmd_r, cmd_w = self._ctx.Pipe(duplex=False)
        evt_r, evt_w = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=worker_main, args=(cmd_r, evt_w, self.config.cancel_grace_s,
                                                                str(self.config.state_dir)),
                                    name=f"gfm-worker-{slot.name}", daemon=False)
        process.start()
        cmd_r.close()  # our copies of the child's ends: their closing is how each side
        evt_w.close()  # notices the other has gone
        slot.process, slot.commands, slot.events = process, cmd_w, evt_r
        log.info("worker %s started (pid %d)", slot.name, process.pid)

    def _send(self, slot: Slot, msg: Command) -> None:
        try:
            assert slot.commands is not None
            slot.commands.send(msg)
        except (OSError, ValueError, AssertionError):
            pass  # a dead worker is noticed through its sentinel

    def _quit(self, slot: Slot) -> None:
        if slot.process is not None and slot.process.is_alive():
            self._send(slot, Quit())
            slot.process.join(5)
        self._kill(slot)
        self._close(slot)

    def _kill(self, slot: Slot) -> None:
        process = slot.process
        if process is None or not process.is_alive():
            return
        process.terminate()
        process.join(3)
        if process.is_alive():
            process.kill()
            process.join(3)

    def _close(self, slot: Slot) -> None:
        for conn in (slot.commands, slot.events):
            if conn is not None:
                conn.close()
        if slot.process is not None and not slot.process.is_alive():
            slot.process.close()
        slot.process = slot.commands = slot.events = None

    def note(self, job_id: str, line: str) -> None:
        """Lifecycle lines in the job's log, beside what the job itself writes there."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(self.config.job_log(job_id), "a", encoding="utf-8") as f:
                f.write(f"{stamp} [service] {line}\n")
        except OSError:
            log.warning("cannot write the log of job %s", job_id)
