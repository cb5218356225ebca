"""At most a few write statements of one pipeline in flight from this process.

A lead change on PostgreSQL takes its pipeline's event lock and holds it through its commit, so the
changes of one pipeline commit one after another whatever the number of connections sending them.
Sending more of them at once only adds backends that wake, find the lock held and sleep again (their
CPU taken from the one holding it) and connections held while they wait. Waiting here costs neither:
with 32 clients moving leads of one pipeline, four in flight gave PostgreSQL 0.59 ms of CPU a move
where twenty gave 0.66–0.77, and 10–20 % more moves a second (``docs/benchmarks.md``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass

IN_FLIGHT = 4  # per pipeline and process: enough to overlap a change's work before the lock with the commit


@dataclass
class _Gate:
    semaphore: asyncio.Semaphore
    users: int = 0  # holding or waiting
    running: int = 0  # holding


class WriteGates:
    def __init__(self, limit: int = IN_FLIGHT) -> None:
        self.limit = limit
        self._gates: dict[Hashable, _Gate] = {}
        self.peak = 0  # most statements of one key in flight at once, for tests

    @asynccontextmanager
    async def passage(self, key: Hashable) -> AsyncIterator[None]:
        """Held while one write statement of ``key`` runs."""
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(asyncio.Semaphore(self.limit))
        gate.users += 1
        try:
            async with gate.semaphore:
                gate.running += 1
                self.peak = max(self.peak, gate.running)
                try:
                    yield
                finally:
                    gate.running -= 1
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[key]  # no one holds or awaits it: a key written once costs nothing

    def __len__(self) -> int:
        return len(self._gates)
