"""Helpers for the API tests: an app over the test store, one API key per role, a GraphQL client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from pipegraph.app import create_app
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys, users
from pipegraph.settings import Settings


@dataclass
class Client:
    http: httpx.AsyncClient
    keys: dict[Role, str]
    user_ids: dict[Role, int]
    as_role: Role = Role.ADMIN
    last_response: httpx.Response | None = field(default=None)
    app: Any = None  # the Starlette app answering, for its state (plans, limits)

    async def raw(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        role: Role | None = None,
        key: str | None = None,
    ) -> httpx.Response:
        token = key if key is not None else self.keys[role or self.as_role]
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token}"},
        )
        self.last_response = response
        return response

    async def run(
        self, query: str, variables: dict[str, Any] | None = None, *, role: Role | None = None
    ) -> Any:
        """The ``data`` of a query that must succeed without GraphQL errors."""
        response = await self.raw(query, variables, role=role)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


async def make_client(store: Store, **settings: Any) -> AsyncIterator[Client]:
    """A client of an app over ``store``; ``settings`` override the defaults (e.g. ``max_depth=3``)."""
    keys: dict[Role, str] = {}
    user_ids: dict[Role, int] = {}
    async with store.write() as session:
        for role in Role:
            user = await users.create_user(
                session, name=role.value.title(), email=f"{role.value.lower()}@example.com", role=role
            )
            _, keys[role] = await api_keys.create_api_key(session, user_id=user.id)
            user_ids[role] = user.id
    app = create_app(
        Settings.from_env({}, database_url=str(store.engine.url.render_as_string(False)), **settings),
        store=store,
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Client(http=http, keys=keys, user_ids=user_ids, app=app)
    finally:  # the transport runs no lifespan: close the compiled reads' connections here
        if app.state.plans is not None:
            await app.state.plans.close()
        if app.state.lead_writes is not None:
            await app.state.lead_writes.close()


CREATE_PIPELINE = """
mutation($input: CreatePipelineInput!) {
  createPipeline(input: $input) {
    pipeline { id name currency stages { id name position isPostSale probability } }
    userErrors { field message code }
  }
}
"""

CREATE_LEAD = """
mutation($input: CreateLeadInput!) {
  createLead(input: $input) {
    lead { id title value version status stage { id name } owner { id email } }
    userErrors { field message code }
  }
}
"""


async def create_pipeline(
    client: Client, name: str = "Sales", template: str = "GENERAL_B2B"
) -> dict[str, Any]:
    data = await client.run(CREATE_PIPELINE, {"input": {"name": name, "template": template}})
    assert data["createPipeline"]["userErrors"] == []
    pipeline: dict[str, Any] = data["createPipeline"]["pipeline"]
    return pipeline


async def create_lead(
    client: Client, pipeline_id: str, *, role: Role | None = None, **fields: Any
) -> dict[str, Any]:
    data = await client.run(
        CREATE_LEAD, {"input": {"pipelineId": pipeline_id, "title": "Deal", **fields}}, role=role
    )
    assert data["createLead"]["userErrors"] == [], data
    lead: dict[str, Any] = data["createLead"]["lead"]
    return lead
