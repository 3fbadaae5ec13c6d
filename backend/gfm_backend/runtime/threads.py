"""Who gets the cores while classifying: the network's compute threads first, the
reader's and writer's threads (decoding, compressing) in the gaps.

The runtime splits each layer over one thread per core and waits for the slowest at
every layer's end, so a reader or writer thread that preempts one compute thread stalls
them all. The I/O threads therefore run at a lower priority (Linux schedules each
thread by its own nice value); they are a tile row ahead, so they are never late by
much. ONNX Runtime's threads sleep rather than spin between layers (its default spins):
on an idle 2-core machine that left the wall time as it was and cut the process's CPU
time by a tenth (tiny, 2048 px, int8: 6.3 -> 5.6 s), and with the cores shared (another
job, QGIS drawing) the same classify took 5.6 s instead of 7.4-9.3 s.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

IO_NICE = 10  # CFS weight about a tenth of a compute thread's


def io_thread() -> None:
    """Lower the calling thread's priority (a ThreadPoolExecutor initializer)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), IO_NICE)
    except OSError:  # a sandbox may refuse; the work is the same, only slower
        pass


def onnx_session_options() -> Any:
    """ONNX Runtime's options: one compute thread per core, no spinning between layers."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
