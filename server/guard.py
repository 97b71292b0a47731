"""Admission limits for connections that have not authenticated yet.

Unauthenticated peers cost the hub a key exchange and a signature check each; these limits keep a flood of them,
or one address guessing keys, from starving the machines that belong. Pure bookkeeping: time is passed in.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field


@dataclass
class AdmissionGuard:
    """Args:
    max_pending: connections allowed to be in their handshake at once, over all sources.
    failure_limit: failed handshakes one source may have within ``window`` seconds before it is refused.
    window: the sliding window for counting failures, in seconds.
    """

    max_pending: int = 1000
    failure_limit: int = 30
    window: float = 60.0
    pending: int = 0
    _failures: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))

    def refusal(self, source: str, now: float) -> str | None:
        """Why a new connection from ``source`` must be refused now, or None to admit it."""
        if self.pending >= self.max_pending:
            return f"too many connections are authenticating ({self.max_pending}); try again shortly"
        if self._recent(source, now) >= self.failure_limit:
            return f"too many failed handshakes from {source}; try again in {self.window:.0f} s"
        return None

    def too_many_failures(self, source: str, now: float) -> bool:
        """Whether ``source`` failed ``failure_limit`` times within the window (REST sign-ins count too)."""
        return self._recent(source, now) >= self.failure_limit

    def _recent(self, source: str, now: float) -> int:
        failures = self._failures.get(source)
        if not failures:
            return 0
        while failures and now - failures[0] > self.window:
            failures.popleft()
        if not failures:
            del self._failures[source]
            return 0
        return len(failures)

    def failed(self, source: str, now: float) -> None:
        failures = self._failures[source]
        failures.append(now)
        while len(failures) > self.failure_limit:
            failures.popleft()  # only the count within the limit matters: memory stays bounded per source


@dataclass(slots=True)
class TokenBucket:
    """A per-session message budget: ``rate`` per second on average, bursts up to ``burst``."""

    rate: float
    burst: float
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means the message is over the limit."""
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
