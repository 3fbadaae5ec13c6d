"""One job run as several ranks: how each rank ended, and what the job became.

The dispatcher owns the processes; this is its bookkeeping, kept apart so that the rules
read in one place. The job ends once every rank has. It succeeded when rank 0 finished
(rank 0 writes the outputs only after every rank's share came through); otherwise a cancel
or a service stop makes it cancelled or interrupted, and anything else fails it in the
failing rank's words.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .store import FAILED, SUCCEEDED


class Ending(enum.Enum):
    DONE = "done"
    FAILED = "failed"  # the task raised (classify_ranks makes every rank raise together)
    STOPPED = "stopped"  # the task saw a cancel
    CRASHED = "crashed"  # the worker died or went silent: the others would wait for it forever
    KILLED = "killed"  # stopped by force by the dispatcher


@dataclass
class RankGroup:
    """The ranks of one running job, rank i on the i-th of its slots."""

    job_id: str
    world: int
    stop_state: str | None = None  # CANCELLED or INTERRUPTED once a stop was asked for
    ends: dict[int, tuple[Ending, str]] = field(default_factory=dict)  # in the order they came
    outputs: dict[str, Any] | None = None  # rank 0's result: the job's

    def end(self, rank: int, how: Ending, message: str = "",
            outputs: dict[str, Any] | None = None) -> None:
        """A rank's end; the first word on a rank is the one that counts."""
        if rank in self.ends:
            return
        self.ends[rank] = (how, message)
        if rank == 0 and how is Ending.DONE:
            self.outputs = outputs or {}

    def ended(self, rank: int) -> bool:
        return rank in self.ends

    @property
    def complete(self) -> bool:
        return len(self.ends) == self.world

    @property
    def lost(self) -> bool:
        """A rank is gone mid-run: the others' collectives can never complete."""
        return any(how in (Ending.CRASHED, Ending.KILLED) for how, _ in self.ends.values())

    @property
    def killed(self) -> bool:
        return any(how is Ending.KILLED for how, _ in self.ends.values())

    def verdict(self) -> tuple[str, str | None]:
        """The job's state once complete, and a failure's message (None: the dispatcher's
        usual words for a success, a cancel or an interruption)."""
        if self.outputs is not None:
            return SUCCEEDED, None
        if self.stop_state is not None:
            return self.stop_state, None
        return FAILED, self.failure()

    def failure(self) -> str:
        """Rank 0's message when it has one (it names the rank that failed first), else the
        first failing rank's, saying which rank it was."""
        how, message = self.ends.get(0, (None, ""))
        if how is Ending.FAILED:
            return message
        for rank, (how, message) in self.ends.items():
            if how in (Ending.FAILED, Ending.STOPPED, Ending.CRASHED):
                return f"rank {rank} of {self.world} failed: {message}"
        return f"the {self.world} ranks were stopped"
