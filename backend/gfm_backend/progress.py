"""Progress reporting and cancellation shared by every task function.

Task functions take a `Progress` so the CLI (terminal bar), the service (job state)
and the QGIS plugin (task progress) all follow the same work and can stop it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import Cancelled

ReportFn = Callable[[float, str], None]


@dataclass
class Progress:
    """Reports fractions 0..1 with a message; `check()` raises `Cancelled` once cancelled.

    `span(a, b)` hands a sub-task its share of the bar, so nested steps compose.
    """

    report: ReportFn | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    is_cancelled: Callable[[], bool] | None = None
    lo: float = 0.0
    hi: float = 1.0

    def __call__(self, fraction: float, message: str = "") -> None:
        self.check()
        if self.report is not None:
            f = min(max(fraction, 0.0), 1.0)
            self.report(self.lo + (self.hi - self.lo) * f, message)

    def cancel(self) -> None:
        self.cancel_event.set()

    def cancelled(self) -> bool:
        if self.cancel_event.is_set():
            return True
        return bool(self.is_cancelled and self.is_cancelled())

    def check(self) -> None:
        if self.cancelled():
            raise Cancelled()

    def muted(self) -> Progress:
        """The same cancel, reporting nowhere: a rank other than the first of a run over
        several processes stops when the job is cancelled and leaves the bar to rank 0."""
        return Progress(cancel_event=self.cancel_event, is_cancelled=self.is_cancelled)

    def span(self, lo: float, hi: float) -> Progress:
        width = self.hi - self.lo
        return Progress(
            report=self.report,
            cancel_event=self.cancel_event,
            is_cancelled=self.is_cancelled,
            lo=self.lo + width * lo,
            hi=self.lo + width * hi,
        )


def silent() -> Progress:
    """A progress that reports nowhere and is never cancelled (library use, tests)."""
    return Progress()
