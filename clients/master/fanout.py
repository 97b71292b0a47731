"""Fan-out controls for a run on many machines, and the summary of how it went.

``FanOut(concurrency=10 | "25%", max_failures=2 | "10%", target_timeout=60)``: at most that many orders in
flight at once (the next machine gets its order as soon as one finishes); once more than ``max_failures``
targets failed or timed out, no further machine gets the order (the rest are *skipped*); a target without a
result ``target_timeout`` seconds after its order went out is cancelled and counted as *timed out*.
Percentages are of the number of targets, rounded up (at least 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from clients.master.models import CommandResult

SKIPPED = "skipped"
TIMED_OUT = "timed_out"


def amount(value: int | str | None, total: int) -> int | None:
    """``10`` or ``"10"`` -> 10, ``"25%"`` of ``total`` -> rounded up, at least 1; None stays None.

    Raises:
        ValueError: not a positive whole number or percentage.
    """
    if value is None:
        return None
    text = str(value).strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 < share <= 100:
                raise ValueError
            return max(1, math.ceil(total * share / 100))
        number = int(text)
    except ValueError:
        raise ValueError(f"{value!r} is neither a positive whole number nor a percentage like 25%") from None
    if number < 0:
        raise ValueError(f"{value!r} must not be negative")
    return number


@dataclass(frozen=True)
class FanOut:
    concurrency: int | str | None = None
    max_failures: int | str | None = None
    target_timeout: float | None = None

    def __post_init__(self) -> None:
        amount(self.concurrency, 100)  # fail early on a malformed value
        amount(self.max_failures, 100)
        if self.concurrency is not None and amount(self.concurrency, 100) == 0:
            raise ValueError("concurrency must be at least 1")
        if self.target_timeout is not None and self.target_timeout <= 0:
            raise ValueError("target_timeout must be positive")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.concurrency, self.max_failures, self.target_timeout))


@dataclass
class Summary:
    """Which machines succeeded, failed, timed out, were skipped, or have no final result yet."""

    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, results: list[CommandResult]) -> Summary:
        summary = cls()
        for r in results:
            if r.status == SKIPPED:
                summary.skipped.append(r.machine)
            elif r.status == TIMED_OUT:
                summary.timed_out.append(r.machine)
            elif r.ok:
                summary.succeeded.append(r.machine)
            elif r.final:
                summary.failed.append(r.machine)
            else:
                summary.unfinished.append(r.machine)
        return summary

    def line(self) -> str:
        parts = [f"{len(self.succeeded)} succeeded", f"{len(self.failed)} failed", f"{len(self.timed_out)} timed out",
                 f"{len(self.skipped)} skipped"]  # fmt: skip
        if self.unfinished:
            parts.append(f"{len(self.unfinished)} unfinished")
        return ", ".join(parts)
