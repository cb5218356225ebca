"""A per-key budget of query cost: a token bucket that refills over time (Shopify's model).

A request may start when its requested cost fits in what is available; it is charged its actual cost
once it has run. The buckets live in this process; with N worker processes behind one port each holds
the whole budget (see :meth:`Throttle.per_process`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

# Beyond this many keys, the ones whose bucket is full again are forgotten (a full bucket is what a
# new key gets anyway), so a flood of keys cannot grow memory without bound.
MAX_TRACKED_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class ThrottleStatus:
    maximum_available: float
    currently_available: float
    restore_rate: float  # points per second

    def as_extension(self) -> dict[str, float]:
        return {
            "maximumAvailable": self.maximum_available,
            "currentlyAvailable": round(self.currently_available, 1),
            "restoreRate": self.restore_rate,
        }


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    status: ThrottleStatus
    retry_after: int  # whole seconds until the requested cost fits; 0 when allowed


class Throttle:
    def __init__(
        self,
        *,
        capacity: float,
        restore_rate: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity <= 0 or restore_rate <= 0:
            raise ValueError("a throttle needs a positive capacity and restore rate")
        self.capacity = capacity
        self.restore_rate = restore_rate
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (available, at)

    @classmethod
    def per_process(cls, *, budget: int, restore_rate: int) -> Throttle | None:
        """This process's bucket, or None when throttling is off (a zero budget).

        Every process holds the whole budget rather than 1/N of it: a client's keep-alive connection
        is served by one worker, so a share would throttle the commonest client, one connection, at
        1/N of its budget; the price is that a client spreading requests over many connections can
        draw up to N budgets."""
        if budget <= 0 or restore_rate <= 0:
            return None
        return cls(capacity=budget, restore_rate=restore_rate)

    def admit(self, key: str, cost: float) -> Admission:
        """Reserve ``cost`` for ``key`` if it fits in what is available now (a cost above the whole
        bucket needs a full one)."""
        cost = min(cost, self.capacity)
        available = self._available(key)
        if cost > available:
            wait = math.ceil((cost - available) / self.restore_rate)
            return Admission(False, self._status(available), max(wait, 1))
        self._store(key, available - cost)
        return Admission(True, self._status(available - cost), 0)

    def settle(self, key: str, reserved: int, actual: int) -> ThrottleStatus:
        """Charge the actual cost of a request admitted with ``reserved``: refund or charge the difference.
        A request that cost more than it asked may leave the bucket below zero; the key then waits."""
        available = min(self.capacity, self._available(key) + reserved - actual)
        self._store(key, available)
        return self._status(available)

    def status(self, key: str) -> ThrottleStatus:
        return self._status(self._available(key))

    def _available(self, key: str) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self.capacity
        available, at = entry
        return min(self.capacity, available + (self._clock() - at) * self.restore_rate)

    def _store(self, key: str, available: float) -> None:
        if key not in self._buckets and len(self._buckets) >= MAX_TRACKED_KEYS:
            self._forget_full()
        self._buckets[key] = (available, self._clock())

    def _forget_full(self) -> None:
        now = self._clock()
        for key, (available, at) in list(self._buckets.items()):
            if available + (now - at) * self.restore_rate >= self.capacity:
                del self._buckets[key]

    def _status(self, available: float) -> ThrottleStatus:
        return ThrottleStatus(self.capacity, available, self.restore_rate)
