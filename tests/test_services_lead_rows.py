"""A page that reads some columns gives the same values as one that reads them all, through its positions."""

from __future__ import annotations

import pytest

from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import leads, pipelines, queries, users


async def _seed(store: Store) -> int:
    async with store.write() as session:
        rep = await users.create_user(session, name="Rep", email="rep@example.com", role=Role.REP)
        pipeline = await pipelines.create_pipeline(session, name="Sales", template="GENERAL_B2B", actor=None)
        for i in range(6):
            await leads.create_lead(
                session,
                pipeline_id=pipeline.id,
                title=f"Deal {i}",
                company=f"Company {i}",
                owner_id=rep.id if i % 2 else None,
                value=i * 10,
                actor=None,
            )
    return pipeline.id


@pytest.mark.parametrize(
    "columns",
    [
        frozenset(),
        frozenset({"title"}),
        frozenset({"title", "stage_name", "owner_name"}),
        frozenset({"company", "status", "stage_target_days", "owner_email", "owner_created_at"}),
    ],
)
async def test_unread_columns_read_as_null_and_read_ones_as_stored(
    store: Store, columns: frozenset[str]
) -> None:
    pipeline_id = await _seed(store)
    async with store.read() as session:
        full = await queries.list_leads(session, pipeline_id=pipeline_id, first=10)
        narrow = await queries.list_leads(session, pipeline_id=pipeline_id, first=10, columns=columns)
    assert len(narrow.leads) == len(full.leads) == 6
    read = {"id", "pipeline_id", "stage_id", "owner_id", "value_cents", "stage_pipeline_id", "created_at"}
    for narrow_row, full_row in zip(narrow.leads, full.leads, strict=True):
        for label, position in queries.LEAD_ROW_POSITIONS.items():
            expected = full_row[position] if label in read | columns else None
            assert narrow_row[narrow.positions[label]] == expected, label
