"""The server side of the workers: lanes of slots, first-come-first-served scheduling.

One thread owns every worker process and every state change of a running job: it
starts queued jobs on free slots (`gpu` lane: `gpu_jobs` at a time, one by default;
`cpu` lane: `cpu_jobs` beside it), records progress and results, turns a dead worker
into a failed job with a plain message, and carries out cancels (a flag the job's
`Progress` reads, then the process is stopped if it does not end within the grace).
A large classify job may run as ranks on the slots of several free GPUs at once
(`split.py` says when; `rank_group.py` keeps what each rank ended with): one job for
the user, its slots busy until every rank has ended.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing as mp
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from ..errors import GfmError
from .config import ServiceConfig
from .gpu_lanes import accepts, placed
from .jobs import CPU, GPU, get_job_type
from .messages import Cancel, Done, Event, Failed, Heartbeat, Progressed, Run, Stopped
from .rank_group import Ending, RankGroup
from .slots import Slot, crash_message
from .split import Extent, free_port, may_split, rank_env, split_ranks
from .store import CANCELLED, FAILED, INTERRUPTED, SUCCEEDED, JobRecord, JobStore

__all__ = ["Dispatcher", "crash_message"]

log = logging.getLogger("gfm_backend.service")
POLL_S = 0.5
STORE_ERRORS = (sqlite3.Error, OSError)  # a full or vanished disk under the state folder


def _fits(device: int | None, devices: list[int], record: JobRecord) -> bool:
    return accepts(device, record.params, devices)


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
        self._extents: dict[str, Extent | None] = {}  # queued jobs' sizes, for the split rule
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
            slot.kill()

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
            slot.quit()

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
        if slot.group is not None:
            self._rank_event(slot, msg)
        elif isinstance(msg, Progressed):
            with contextlib.suppress(*STORE_ERRORS):  # progress is not worth keeping for later
                self.store.set_progress(msg.job_id, msg.fraction, msg.message)
        elif isinstance(msg, Done):
            self._settle(slot, SUCCEEDED, f"done in {self._took(msg.job_id):.1f} s", msg.outputs)
        elif isinstance(msg, Failed):
            self._settle(slot, FAILED, msg.message)
        elif isinstance(msg, Stopped):
            if slot.stop_state == INTERRUPTED:
                self._settle(slot, INTERRUPTED, self._interrupted_message(msg.job_id))
            else:
                self._settle(slot, CANCELLED, "cancelled; partial outputs were discarded")

    def _took(self, job_id: str) -> float:
        record = self.store.get(job_id)
        return time.time() - record.started_at if record and record.started_at else 0.0

    def _interrupted_message(self, job_id: str) -> str:
        record = self.store.get(job_id)
        how = (f" Resume it with POST /jobs/{job_id}/resume." if record and record.resumable
               else " Submit it again to redo it.")
        return "interrupted: the service was stopped while this job was running." + how

    def _settle(self, slot: Slot, state: str, message: str, outputs: dict | None = None) -> None:
        assert slot.job_id is not None
        self._finish(slot.job_id, state, message, outputs)
        slot.free()

    def _finish(self, job_id: str, state: str, message: str, outputs: dict | None = None) -> None:
        self._write(self.store.finish, job_id, state, message, outputs)
        self.note(job_id, f"{state}: {message}")
        log.info("job %s %s: %s", job_id, state, message)
        with self._lock:
            self._cancels.discard(job_id)

    def _worker_died(self, slot: Slot) -> None:
        assert slot.process is not None
        code = slot.process.exitcode
        log.warning("worker %s (pid %s) exited with code %s", slot.name, slot.process.pid, code)
        slot.close()
        if slot.group is not None:
            if slot.running:
                self._rank_end(slot, Ending.CRASHED, crash_message(code))
        elif slot.job_id:
            if slot.stop_state:
                message = ("cancelled; partial outputs were discarded" if slot.stop_state == CANCELLED
                           else self._interrupted_message(slot.job_id))
                self._settle(slot, slot.stop_state, message)
            else:
                self._settle(slot, FAILED, crash_message(code))

    def _apply_cancels(self) -> None:
        with self._lock:
            pending, self._cancels = self._cancels, set()
        for job_id in pending:
            on_slots = [s for s in self._slots if s.job_id == job_id]  # a split job: all its ranks
            for slot in on_slots:
                if slot.stop_state is None:
                    self._ask_to_stop(slot, CANCELLED)
            if on_slots:
                continue
            self._extents.pop(job_id, None)
            record = self.store.get(job_id)
            if record is not None and record.state == "queued":
                self._write(self.store.finish, job_id, CANCELLED, "cancelled before it started")
                self.note(job_id, "cancelled before it started")

    def _ask_to_stop(self, slot: Slot, state: str) -> None:
        assert slot.job_id is not None
        slot.stop_state = state
        first = slot.group is None or slot.group.stop_state is None
        if slot.group is not None:
            slot.group.stop_state = slot.group.stop_state or state
        if first:
            self.note(slot.job_id, "cancel requested" if state == CANCELLED
                      else "the service is stopping; asking the job to stop")
        if slot.running:  # a rank already over waits for the others
            slot.deadline = time.monotonic() + self.config.cancel_grace_s
            slot.send(Cancel(slot.job_id))

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        self._enforce_heartbeats(now)
        grace = self.config.cancel_grace_s
        for slot in self._slots:
            if slot.running and slot.deadline is not None and now > slot.deadline:
                assert slot.job_id is not None
                log.warning("job %s did not stop within %.0f s; stopping its worker %s",
                            slot.job_id, grace, slot.name)
                slot.kill()
                slot.close()
                if slot.group is not None:
                    self._rank_end(slot, Ending.KILLED, f"it did not stop within {grace:g} s")
                    continue
                state = slot.stop_state or CANCELLED
                message = (f"cancelled (the job did not stop by itself within {grace:g} s, so "
                           "its worker was stopped)" if state == CANCELLED
                           else self._interrupted_message(slot.job_id))
                self._settle(slot, state, message)

    def _enforce_heartbeats(self, now: float) -> None:
        limit = self.config.heartbeat_timeout_s
        for slot in self._slots:
            if slot.running and slot.stop_state is None and now - slot.last_heard > limit:
                log.warning("job %s: no heartbeat from worker %s for %.0f s; stopping it",
                            slot.job_id, slot.name, now - slot.last_heard)
                slot.kill()
                slot.close()
                message = (f"the job's worker stopped responding (no heartbeat for {limit:g} s: "
                           "stopped, hung or swapping), so it was killed. The service is still "
                           "running; submit the job again.")
                if slot.group is not None:
                    self._rank_end(slot, Ending.CRASHED, message)
                else:
                    self._settle(slot, FAILED, message)

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
            ranks = self._rank_slots(slot, record)
            if len(ranks) > 1:
                self._start_split(record, ranks)
            else:
                self._start_job(slot, record.id, record.type, placed(slot.device, record.params))

    def _start_job(self, slot: Slot, job_id: str, job_type: str, params: dict[str, Any],
                   env: dict[str, str] | None = None) -> None:
        if slot.process is None or not slot.process.is_alive():
            slot.close()
            slot.spawn(self._ctx, self.config)
        assert slot.process is not None
        slot.job_id = job_id
        slot.last_heard = time.monotonic()
        self._extents.pop(job_id, None)
        where = f"{slot.name}, worker pid {slot.process.pid}"
        if slot.rank == 0:
            self._write(self.store.mark_running, job_id, slot.process.pid)
            record = self.store.get(job_id)
            ranks = f" as rank 0 of {slot.group.world}" if slot.group else ""
            self.note(job_id, f"started (attempt {record.attempts if record else 1}) on {where}{ranks}")
        else:
            assert slot.group is not None
            self.note(job_id, f"rank {slot.rank} of {slot.group.world} on {where}")
        log.info("job %s (%s) started on %s", job_id, job_type, slot.name)
        slot.send(Run(job_id, job_type, params, str(self.config.job_log(job_id)),
                      self._threads_for_new_job(), env))

    def _threads_for_new_job(self) -> int:
        """A fair share of the cores: alone, a job gets them all; beside others, a part."""
        busy = sum(1 for s in self._slots if s.job_id)
        return max(1, (os.cpu_count() or 1) // max(busy, 1))

    # ------------------------------------------------------------------ split jobs
    def _rank_slots(self, slot: Slot, record: JobRecord) -> list[Slot]:
        """The slots a job runs on: `slot`, and for a job split by the rule of `split.py`,
        a free slot on each of other devices, one per rank."""
        if slot.device is None or not may_split(record.params):
            return [slot]
        try:
            extent_of = get_job_type(record.type).extent
        except GfmError:  # a type no longer registered: its worker says so, on one slot
            return [slot]
        free = {slot.device: slot}
        for other in self._slots:
            if other.lane == GPU and other.job_id is None and other.device is not None:
                free.setdefault(other.device, other)
        if extent_of is None or len(free) < 2:
            return [slot]
        if record.id not in self._extents:
            self._extents[record.id] = extent_of(record.params)
        ranks = split_ranks(self._extents[record.id], len(free), self.config.split_min_mpix)
        return list(free.values())[:ranks]

    def _start_split(self, record: JobRecord, slots: list[Slot]) -> None:
        """Rank i of the job on the i-th slot, each with its own device and the shared
        rendezvous port; all slots are taken before any starts (fair thread shares)."""
        group, port = RankGroup(record.id, len(slots)), free_port()
        for rank, slot in enumerate(slots):
            slot.job_id, slot.group, slot.rank = record.id, group, rank
        log.info("job %s runs as %d ranks on %s", record.id, len(slots),
                 ", ".join(s.name for s in slots))
        for rank, slot in enumerate(slots):
            self._start_job(slot, record.id, record.type, placed(slot.device, record.params),
                            rank_env(rank, len(slots), port, slot.device))

    def _rank_event(self, slot: Slot, msg: Event) -> None:
        """A message from one rank of a split job: rank 0 speaks for the job's progress."""
        if isinstance(msg, Progressed):
            if slot.rank == 0:
                with contextlib.suppress(*STORE_ERRORS):
                    self.store.set_progress(msg.job_id, msg.fraction, msg.message)
        elif isinstance(msg, Done):
            self._rank_end(slot, Ending.DONE, outputs=msg.outputs)
        elif isinstance(msg, Failed):
            self._rank_end(slot, Ending.FAILED, msg.message)
        elif isinstance(msg, Stopped):
            self._rank_end(slot, Ending.STOPPED, msg.message)

    def _rank_end(self, slot: Slot, how: Ending, message: str = "",
                  outputs: dict[str, Any] | None = None) -> None:
        """One rank has ended. A rank gone mid-run leaves the others waiting for it in a
        collective: they are stopped at once; after a failure they are asked to stop and
        given the grace. The job settles when every rank has ended."""
        group = slot.group
        assert group is not None
        group.end(slot.rank, how, message, outputs)
        slot.deadline = None
        ranks = [s for s in self._slots if s.group is group]
        for other in (s for s in ranks if s.running):
            if group.lost:
                other.kill()
                other.close()
                group.end(other.rank, Ending.KILLED, "stopped: another rank had gone")
                self.note(group.job_id, f"rank {other.rank} stopped: rank {slot.rank} is gone "
                          "and would be waited for forever")
            elif how is not Ending.DONE and other.deadline is None:
                other.deadline = time.monotonic() + self.config.cancel_grace_s
                other.send(Cancel(group.job_id))
        if group.complete:
            self._settle_group(group, ranks)

    def _settle_group(self, group: RankGroup, ranks: list[Slot]) -> None:
        state, failure = group.verdict()
        if state == SUCCEEDED:
            message = f"done in {self._took(group.job_id):.1f} s as {group.world} ranks"
        elif state == CANCELLED:
            message = (f"cancelled (the job did not stop by itself within "
                       f"{self.config.cancel_grace_s:g} s, so its workers were stopped)"
                       if group.killed else "cancelled; partial outputs were discarded")
        elif state == INTERRUPTED:
            message = self._interrupted_message(group.job_id)
        else:
            message = failure or "failed"
        self._finish(group.job_id, state, message, group.outputs)
        for slot in ranks:
            slot.free()

    # ------------------------------------------------------------------ logs
    def note(self, job_id: str, line: str) -> None:
        """Lifecycle lines in the job's log, beside what the job itself writes there."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(self.config.job_log(job_id), "a", encoding="utf-8") as f:
                f.write(f"{stamp} [service] {line}\n")
        except OSError:
            log.warning("cannot write the log of job %s", job_id)
