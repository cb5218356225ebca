"""Per-request DataLoaders: every batch is one SQL statement whatever the number of keys.

Built fresh for each request (in ``get_context``), so a cache never outlives the request that filled it;
each loader only when a resolver first asks for it.
Leads come with stage and owner joined, so those relations need no loader.
"""

from __future__ import annotations

import functools
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
    """Each loader is built on first use: most requests need none or one of them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._recent_activities: dict[int, DataLoader[int, list[models.Activity]]] = {}

    @functools.cached_property
    def lead(self) -> DataLoader[int, queries.LeadRow | None]:
        return DataLoader(_optional(self._store, queries.leads_by_ids))

    @functools.cached_property
    def user(self) -> DataLoader[int, models.User | None]:
        return DataLoader(_optional(self._store, queries.users_by_ids))

    @functools.cached_property
    def pipeline(self) -> DataLoader[int, models.Pipeline | None]:
        return DataLoader(_optional(self._store, queries.pipelines_by_ids))

    @functools.cached_property
    def stage(self) -> DataLoader[int, models.Stage | None]:
        return DataLoader(_optional(self._store, queries.stages_by_ids))

    @functools.cached_property
    def activity(self) -> DataLoader[int, models.Activity | None]:
        return DataLoader(_optional(self._store, queries.activities_by_ids))

    @functools.cached_property
    def stages_of_pipeline(self) -> DataLoader[int, list[models.Stage]]:
        return DataLoader(_batch(self._store, queries.stages_by_pipeline_ids, list))

    @functools.cached_property
    def stage_totals(self) -> DataLoader[int, dict[models.LeadStatus, queries.StageTotal]]:
        return DataLoader(_batch(self._store, queries.stage_totals, dict))

    @functools.cached_property
    def history(self) -> DataLoader[int, list[models.StageHistory]]:
        return DataLoader(_batch(self._store, queries.history_by_lead_ids, list))

    def recent_activities(self, limit: int) -> DataLoader[int, list[models.Activity]]:
        """One loader per requested limit, so leads asking for the same number share a batch."""
        loader = self._recent_activities.get(limit)
        if loader is None:

            async def fetch(session: AsyncSession, ids: Sequence[int]) -> dict[int, list[models.Activity]]:
                return await queries.recent_activities(session, ids, limit=limit)

            loader = self._recent_activities[limit] = DataLoader(_batch(self._store, fetch, list))
        return loader
