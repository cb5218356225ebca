"""The fast execution path gives exactly what graphql-core's standard path gives."""

from __future__ import annotations

from typing import Any

import pytest

from api_support import Client, create_lead, create_pipeline, make_client
from pipegraph.api.context import Context
from pipegraph.api.loaders import Loaders
from pipegraph.api.schema import build_schema
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import users
from pipegraph.services.events import InProcessBroker
from pipegraph.services.lead_snapshots import LeadSnapshots

QUERY = """
query($skipOwner: Boolean!) {
  __typename
  leads(first: 10, orderBy: {field: VALUE, direction: ASC}) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges {
      cursor
      node {
        __typename id title value status version budget closedAt expectedCloseDate
        renamed: title
        ...more
        owner @skip(if: $skipOwner) { id name role }
        stage { id name probability targetDays isPostSale leadCount pipeline { name currency } }
        activities(first: 2) { kind subject owner { email } }
        history { fromStatus toStatus toStage { name } }
      }
    }
    nodes { id isStalled }
  }
}
fragment more on Lead { company contactEmail qualificationScore stage { position } }
"""


async def _run(store: Store, viewer_id: int, fast: bool, skip_owner: bool) -> Any:
    async with store.read() as session:
        viewer = await users.get_user(session, viewer_id)
    context = Context(
        store=store,
        broker=InProcessBroker(),
        lead_snapshots=LeadSnapshots(),
        loaders=Loaders(store),
        request_id="test",
        viewer=viewer,
    )
    result = await build_schema(fast_execution=fast).execute(
        QUERY, variable_values={"skipOwner": skip_owner}, context_value=context
    )
    assert result.errors is None, result.errors
    return result.data


@pytest.mark.parametrize("skip_owner", [False, True])
async def test_fast_and_standard_execution_agree(store: Store, skip_owner: bool) -> None:
    client: Client
    async for client in make_client(store):
        pipeline = await create_pipeline(client)
        for i in range(12):
            lead = await create_lead(client, pipeline["id"], value=str(i), company=f"C{i}", role=Role.REP)
            if i % 3 == 0:
                await client.run(
                    'mutation($id: ID!) { logActivity(input: {leadId: $id, kind: CALL, subject: "hi"}) '
                    "{ userErrors { code } } }",
                    {"id": lead["id"]},
                )
        viewer_id = client.user_ids[Role.VIEWER]
    fast = await _run(store, viewer_id, True, skip_owner)
    standard = await _run(store, viewer_id, False, skip_owner)
    assert fast == standard
    assert list(fast["leads"]["edges"][0]["node"]) == list(standard["leads"]["edges"][0]["node"])
    assert len(fast["leads"]["edges"]) == 10
    assert ("owner" in fast["leads"]["edges"][0]["node"]) is not skip_owner
