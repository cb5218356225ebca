"""Per-request DataLoaders: every batch is one SQL statement whatever the number of keys.

Built fresh for each request (in ``get_context``), so a cache never outlives the request that filled it.
Leads come with stage and owner joined, so those relations need no loader.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from pipegraph.db import models
from pipegraph.db.session import Store
from pipegraph.services import queries

V = TypeVar("V")


def _batch(
    store: Store,
    fetch: Callable[[AsyncSession, Sequence[int]], Awaitable[dict[int, V]]],
    default: Callable[[], V],
) -> Callable[[list[int]], Awaitable[list[V]]]:
    async def load(keys: list[int]) -> list[V]:
        async with store.read() as session:
            found = await fetch(session, keys)
        return [found[key] if key in found else default() for key in keys]

    return load


def _optional(
    store: Store, fetch: Callable[[AsyncSession, Sequence[int]], Awaitable[dict[int, V]]]
) -> Callable[[list[int]], Awaitable[list[V | None]]]:
    async def load(keys: list[int]) -> list[V | None]:
        async with store.read() as session:
            found = await fetch(session, keys)
        return [found.get(key) for key in keys]

    return load


class Loaders:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.lead = DataLoader(_optional(store, queries.leads_by_ids))
        self.user = DataLoader(_optional(store, queries.users_by_ids))
        self.pipeline = DataLoader(_optional(store, queries.pipelines_by_ids))
        self.stage = DataLoader(_optional(store, queries.stages_by_ids))
        self.activity = DataLoader(_optional(store, queries.activities_by_ids))
        self.stages_of_pipeline: DataLoader[int, list[models.Stage]] = DataLoader(
            _batch(store, queries.stages_by_pipeline_ids, list)
        )
        self.stage_totals: DataLoader[int, dict[models.LeadStatus, queries.StageTotal]] = DataLoader(
            _batch(store, queries.stage_totals, dict)
        )
        self.history: DataLoader[int, list[models.StageHistory]] = DataLoader(
            _batch(store, queries.history_by_lead_ids, list)
        )
        self._recent_activities: dict[int, DataLoader[int, list[models.Activity]]] = {}

    def recent_activities(self, limit: int) -> DataLoader[int, list[models.Activity]]:
        """One loader per requested limit, so leads asking for the same number share a batch."""
        loader = self._recent_activities.get(limit)
        if loader is None:

            async def fetch(session: AsyncSession, ids: Sequence[int]) -> dict[int, list[models.Activity]]:
                return await queries.recent_activities(session, ids, limit=limit)

            loader = self._recent_activities[limit] = DataLoader(_batch(self._store, fetch, list))
        return loader
