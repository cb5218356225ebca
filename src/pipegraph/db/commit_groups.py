"""Single-statement writes of one key committed together while an earlier group of that key commits.

A lead change on PostgreSQL is one statement that takes its pipeline's event lock and sends a
``NOTIFY``. Both are held until the commit's WAL flush ends, and a notifying commit also holds a lock
for the whole database, so changes of a pipeline commit one at a time, one flush each, however many
connections send them (``scripts/bench_notify_commit.py`` measures it). Here the changes of a key that
arrive while its group is committing wait in the process and go in the next group: one ``BEGIN``, each
statement in arrival order, one ``COMMIT`` — one flush and one lock for the whole group. A statement
alone is sent as it always was, in autocommit.

Each statement keeps its own answer: the statements check what they change (a lead's version) in
their own ``WHERE``, so a later statement in a group sees the earlier ones as it would have after their
commits. If a statement fails, PostgreSQL has aborted the group's transaction and nothing of it is kept;
each statement is then sent again alone, so the failure reaches its own caller only. A connection lost
mid-group reaches every caller of the group as an error, as it would have reached each alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from pipegraph.db.direct import DirectConnections


@dataclass
class _Pending:
    statement: str
    parameters: Sequence[Any]
    answer: asyncio.Future[list[asyncpg.Record]]


@dataclass
class _Queue:
    pending: list[_Pending] = field(default_factory=list)
    running: bool = False


class CommitGroups:
    def __init__(self, connections: DirectConnections) -> None:
        self._connections = connections
        self._queues: dict[Hashable, _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # How many transactions and statements went to the database (the tests read them).
        self.commits = 0
        self.statements = 0

    async def fetch(self, key: Hashable, statement: str, parameters: Sequence[Any]) -> list[asyncpg.Record]:
        """The statement's rows, once it has committed (alone or in its key's next group)."""
        queue = self._queues.setdefault(key, _Queue())
        answer: asyncio.Future[list[asyncpg.Record]] = asyncio.get_running_loop().create_future()
        queue.pending.append(_Pending(statement, parameters, answer))
        if not queue.running:
            queue.running = True
            task = asyncio.create_task(self._drain(key, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # The group runs in its own task: a caller that goes away does not stop the others' statements.
        return await asyncio.shield(answer)

    async def close(self) -> None:
        """Wait for the groups already under way."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drain(self, key: Hashable, queue: _Queue) -> None:
        try:
            while queue.pending:
                group, queue.pending = queue.pending, []
                await self._run(group)
        except BaseException as error:  # stopped (the server shutting down): no caller left waiting
            for pending in queue.pending:
                _fail(pending, error)
            queue.pending = []
            raise
        finally:
            queue.running = False
            if self._queues.get(key) is queue:
                del self._queues[key]

    async def _run(self, group: list[_Pending]) -> None:
        if len(group) == 1:
            await self._alone(group[0])
            return
        try:
            async with self._connections.connection() as connection:
                answers = await self._together(connection, group)
        except asyncpg.PostgresError:
            # A statement failed and the transaction with it: nothing of the group was kept.
            for pending in group:
                await self._alone(pending)
            return
        except BaseException as error:
            for pending in group:
                _fail(pending, error)
            if not isinstance(error, Exception):
                raise
            return
        for pending, rows in zip(group, answers, strict=True):
            if not pending.answer.done():
                pending.answer.set_result(rows)

    async def _together(
        self, connection: asyncpg.Connection, group: list[_Pending]
    ) -> list[list[asyncpg.Record]]:
        answers = []
        async with connection.transaction():
            for pending in group:
                answers.append(await connection.fetch(pending.statement, *pending.parameters))
        self.commits += 1
        self.statements += len(group)
        return answers

    async def _alone(self, pending: _Pending) -> None:
        try:
            async with self._connections.connection() as connection:
                rows = await connection.fetch(pending.statement, *pending.parameters)
        except BaseException as error:
            _fail(pending, error)
            if not isinstance(error, Exception):
                raise
            return
        self.commits += 1
        self.statements += 1
        if not pending.answer.done():
            pending.answer.set_result(rows)


def _fail(pending: _Pending, error: BaseException) -> None:
    if not pending.answer.done():
        pending.answer.set_exception(error if isinstance(error, Exception) else asyncio.CancelledError())
