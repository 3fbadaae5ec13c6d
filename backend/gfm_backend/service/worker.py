"""The worker process: runs the jobs the server hands it, one at a time.

Runs in a `spawn`ed child so a crash, a hang or an out-of-memory kill in a job never
takes the server down, and stays alive between jobs so torch and the libraries stay
loaded. Talks to the server over two pipes: commands in (`run`, `cancel`, `quit`),
events out (`progress`, `done`, `failed`, `cancelled`). When the server dies (even by
`kill -9`) the command pipe closes: the running job is cancelled (staged outputs are
discarded) and the worker exits, so no orphan keeps the GPU.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection

from ..errors import Cancelled, GfmError, environment_problem
from ..progress import Progress
from .messages import Cancel, Done, Event, Failed, Heartbeat, Progressed, Quit, Run, Stopped

log = logging.getLogger("gfm_backend.service.worker")
NICENESS = 10  # jobs yield the CPU to the server, so status requests stay fast
PROGRESS_INTERVAL_S = 0.25
HEARTBEAT_S = 2.0  # the server fails a job whose worker stays silent for --heartbeat-timeout
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Link:
    """The worker's end of the pipes; `orphaned` once the server has gone."""

    def __init__(self, commands: Connection, events: Connection, exit_grace_s: float) -> None:
        self.commands, self.events = commands, events
        self.exit_grace_s = exit_grace_s
        self.jobs: queue.Queue[Run | None] = queue.Queue()
        self.cancelled: set[str] = set()
        self.orphaned = threading.Event()
        self._send_lock = threading.Lock()

    def read_commands(self) -> None:
        """Reader thread: queue `run`s, note `cancel`s, notice the server going away."""
        while True:
            try:
                msg = self.commands.recv()
            except (EOFError, OSError):
                self._server_gone()
                return
            if isinstance(msg, Run):
                self.cancelled.discard(msg.job_id)  # a resumed job may have been cancelled before
                self.jobs.put(msg)
            elif isinstance(msg, Cancel):
                self.cancelled.add(msg.job_id)
            elif isinstance(msg, Quit):
                self.jobs.put(None)
                return

    def _server_gone(self) -> None:
        self.orphaned.set()
        self.jobs.put(None)
        # the running job gets a grace period to stop at its next progress check
        timer = threading.Timer(self.exit_grace_s, os._exit, args=(1,))
        timer.daemon = True
        timer.start()

    def beat(self) -> None:
        """Heartbeat thread: a worker that is stopped (SIGSTOP) or wedged in C code with the
        GIL held goes silent, and the server can tell it from a long, quiet step."""
        while not self.orphaned.wait(HEARTBEAT_S):
            self.send(Heartbeat())

    def send(self, msg: Event) -> None:
        try:
            with self._send_lock:
                self.events.send(msg)
        except (OSError, ValueError):  # the server has gone
            self._server_gone()


def worker_main(commands: Connection, events: Connection, exit_grace_s: float = 10.0,
                state_dir: str | None = None) -> None:
    """Entry point of a worker process (`multiprocessing` spawn target). `state_dir` is the
    service's: jobs that keep things there (the weights store) find it as `$GFM_STATE_DIR`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is the server's
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if state_dir:
        from .config import STATE_DIR_ENV

        os.environ[STATE_DIR_ENV] = state_dir
    _setup_logging()
    from .jobs import load_plugins

    load_plugins()
    link = _Link(commands, events, exit_grace_s)
    threading.Thread(target=link.read_commands, name="gfm-worker-commands", daemon=True).start()
    threading.Thread(target=link.beat, name="gfm-worker-heartbeat", daemon=True).start()
    while (run := link.jobs.get()) is not None:
        _set_threads(run.threads)
        _run_job(link, run)
        if link.orphaned.is_set():
            break
        _release_memory()
    os._exit(0)  # skip interpreter teardown: nothing of ours needs it and it can hang on CUDA


def _set_threads(threads: int) -> None:
    """CPU threads for this job: jobs side by side must not oversubscribe the cores
    (OpenMP threads that spin against each other make both jobs many times slower)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read when torch is first imported
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in ("gfm", "gfm_backend"):
        logging.getLogger(name).setLevel(logging.INFO)
    logging.captureWarnings(True)


@contextlib.contextmanager
def _output_to(log_path: str) -> Iterator[None]:
    """Send this process's stdout and stderr (Python and C libraries alike) to the job log."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (*saved, fd):
            os.close(f)


@contextlib.contextmanager
def _environment(extra: dict[str, str] | None) -> Iterator[None]:
    """A run's own environment (a rank's torch.distributed settings), put back afterwards:
    the worker outlives the run, and its next job must not think it is a rank."""
    saved = {name: os.environ.get(name) for name in extra or {}}
    os.environ.update(extra or {})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _progress(link: _Link, job_id: str) -> Progress:
    last_t, last_message = [0.0], [""]

    def report(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last_t[0] >= PROGRESS_INTERVAL_S or message != last_message[0] or fraction >= 1:
            last_t[0], last_message[0] = now, message
            link.send(Progressed(job_id, fraction, message))

    def is_cancelled() -> bool:
        return job_id in link.cancelled or link.orphaned.is_set()

    return Progress(report=report, is_cancelled=is_cancelled)


def failure_message(exc: BaseException) -> str:
    """What a GIS user reads when a job fails; the traceback goes to the job log."""
    if isinstance(exc, GfmError):
        return str(exc)
    problem = environment_problem(exc)
    if problem is not None:
        return problem
    name = type(exc).__name__
    if isinstance(exc, MemoryError):
        return ("the job ran out of memory; try a smaller batch_size, a smaller raster or "
                "tile size, or close other programs (details in the job log)")
    if name == "OutOfMemoryError" or "CUDA out of memory" in str(exc):
        return ("the GPU ran out of memory; try a smaller batch_size, or device 'cpu' "
                "(details in the job log)")
    return (f"internal error: {name}: {str(exc)[:300]} (this is a bug in the backend, not in "
            "your data; the job log has the details)")


def _run_job(link: _Link, run: Run) -> None:
    from .jobs import get_job_type

    job_id, job_type = run.job_id, run.job_type
    with _output_to(run.log_path), _environment(run.env):
        log.info("running %s job %s in worker pid %d%s", job_type, job_id, os.getpid(),
                 f" as rank {run.env['RANK']} of {run.env['WORLD_SIZE']}"
                 if run.env and "RANK" in run.env else "")
        t0 = time.perf_counter()
        try:
            kind = get_job_type(job_type)
            outputs = kind.run(kind.model(run.params), _progress(link, job_id))
        except Cancelled as exc:
            if link.orphaned.is_set():
                log.info("stopped: the service went away while the job ran (its process ended "
                         "or was killed); the job is marked interrupted when the service starts")
            else:
                log.info("cancelled: %s", exc)
            link.send(Stopped(job_id, str(exc)))
        except BaseException as exc:  # every failure must reach the server
            log.error("failed:\n%s", "".join(traceback.format_exception(exc)).rstrip())
            link.send(Failed(job_id, failure_message(exc)))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            log.info("succeeded in %.1f s", time.perf_counter() - t0)
            link.send(Done(job_id, outputs))


def _release_memory() -> None:
    """Give memory (and GPU memory) back between jobs; the libraries stay loaded."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
