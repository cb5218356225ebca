from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from api_support import CREATE_LEAD, Client, create_lead, create_pipeline, make_client
from pipegraph.db.models import Role
from pipegraph.db.session import Store


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    async for c in make_client(store):
        yield c


MOVE = """
mutation($input: MoveLeadInput!) {
  moveLead(input: $input) {
    lead { id version stage { id name } status }
    userErrors { field message code }
  }
}
"""

CLOSE = """
mutation($input: CloseLeadInput!) {
  closeLead(input: $input) { lead { id status value version closedAt } userErrors { field message code } }
}
"""

LEAD = """
query($id: ID!) {
  lead(id: $id) {
    id title value version status stage { id name } owner { email }
    history { fromStage { name } toStage { name } fromStatus toStatus actor { email } }
  }
}
"""


async def _lead(client: Client, lead_id: str) -> dict[str, Any]:
    data = await client.run(LEAD, {"id": lead_id})
    lead: dict[str, Any] = data["lead"]
    return lead


async def test_create_move_close_and_read_back(client: Client) -> None:
    pipeline = await create_pipeline(client)
    stages = pipeline["stages"]
    lead = await create_lead(client, pipeline["id"], role=Role.REP, value="1200.50", contactEmail="a@b.co")
    assert (lead["value"], lead["version"], lead["stage"]["name"]) == ("1200.50", 1, "Lead Generation")
    assert lead["owner"]["email"] == "rep@example.com"
    moved = await client.run(
        MOVE,
        {"input": {"leadId": lead["id"], "toStageId": stages[2]["id"], "expectedVersion": 1}},
        role=Role.REP,
    )
    assert moved["moveLead"]["userErrors"] == []
    assert moved["moveLead"]["lead"]["version"] == 2
    closed = await client.run(
        CLOSE,
        {"input": {"leadId": lead["id"], "outcome": "WON", "value": "1500", "expectedVersion": 2}},
        role=Role.MANAGER,
    )
    assert closed["closeLead"]["lead"]["status"] == "WON"
    assert closed["closeLead"]["lead"]["value"] == "1500.00"
    read = await _lead(client, lead["id"])
    assert [
        (h["fromStage"] and h["fromStage"]["name"], h["toStage"]["name"], h["fromStatus"], h["toStatus"])
        for h in read["history"]
    ] == [
        (None, "Lead Generation", None, "OPEN"),
        ("Lead Generation", "Needs Assessment", "OPEN", "OPEN"),
        ("Needs Assessment", "Needs Assessment", "OPEN", "WON"),
    ]
    assert [h["actor"]["email"] for h in read["history"]] == ["rep@example.com"] * 2 + ["manager@example.com"]


@pytest.mark.parametrize(
    ("case", "field", "code"),
    [
        ("stale", "input.expectedVersion", "CONFLICT"),
        ("other_pipeline", "input.toStageId", "INVALID"),
        ("closed", "input.leadId", "INVALID"),
        ("unknown_lead", "input.leadId", "NOT_FOUND"),
        ("malformed_id", "input.toStageId", "INVALID"),
        ("viewer", "input.leadId", "FORBIDDEN"),
    ],
)
async def test_bad_moves_are_user_errors_and_change_nothing(
    client: Client, case: str, field: str | None, code: str
) -> None:
    pipeline = await create_pipeline(client)
    other = await create_pipeline(client, name="Other", template="REAL_ESTATE")
    lead = await create_lead(client, pipeline["id"])
    lost = await create_lead(client, pipeline["id"])
    await client.run(
        CLOSE, {"input": {"leadId": lost["id"], "outcome": "LOST", "reason": "price", "expectedVersion": 1}}
    )
    before = [await _lead(client, lead["id"]), await _lead(client, lost["id"])]
    unknown = "TGVhZDo5OTk5OTk="  # Lead:999999
    move: dict[str, Any] = {
        "leadId": lead["id"],
        "toStageId": pipeline["stages"][1]["id"],
        "expectedVersion": 1,
    }
    move |= {
        "stale": {"expectedVersion": 0},
        "other_pipeline": {"toStageId": other["stages"][1]["id"]},
        "closed": {"leadId": lost["id"], "expectedVersion": 2},
        "unknown_lead": {"leadId": unknown},
        "malformed_id": {"toStageId": "not-an-id"},
        "viewer": {},
    }[case]
    data = await client.run(MOVE, {"input": move}, role=Role.VIEWER if case == "viewer" else Role.ADMIN)
    payload = data["moveLead"]
    [error] = payload["userErrors"]
    assert (error["field"], error["code"]) == (field, code)
    if case == "stale":
        assert "version 1" in error["message"]
        # The lead as it is now, to retry from without reading it again.
        assert payload["lead"] == {
            "id": lead["id"],
            "version": 1,
            "stage": lead["stage"],
            "status": "OPEN",
        }
    else:
        assert payload["lead"] is None
    assert [await _lead(client, lead["id"]), await _lead(client, lost["id"])] == before


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"value": "-5"}, "input.value", "INVALID"),
        ({"value": "10.123"}, "input.value", "INVALID"),
        ({"contactEmail": "not an email"}, "input.contactEmail", "INVALID"),
        ({"title": ""}, "input.title", "INVALID"),
        ({"ownerId": "VXNlcjo5OTk5"}, "input.ownerId", "NOT_FOUND"),
    ],
)
async def test_bad_lead_input_is_a_user_error_and_writes_nothing(
    client: Client, fields: dict[str, Any], field: str, code: str
) -> None:
    pipeline = await create_pipeline(client)
    data = await client.run(CREATE_LEAD, {"input": {"pipelineId": pipeline["id"], "title": "T", **fields}})
    assert data["createLead"]["lead"] is None
    assert [(e["field"], e["code"]) for e in data["createLead"]["userErrors"]] == [(field, code)]
    count = await client.run("{ leads { totalCount } }")
    assert count["leads"]["totalCount"] == 0


async def test_rep_changes_only_own_leads(client: Client) -> None:
    pipeline = await create_pipeline(client)
    managers = await create_lead(client, pipeline["id"], role=Role.MANAGER)
    move = {"leadId": managers["id"], "toStageId": pipeline["stages"][1]["id"], "expectedVersion": 1}
    denied = await client.run(MOVE, {"input": move}, role=Role.REP)
    [error] = denied["moveLead"]["userErrors"]
    assert (error["code"], error["field"]) == ("FORBIDDEN", "input.leadId")
    # The message names no database id: the client knows the lead only by its global ID.
    assert error["message"] == "this lead belongs to another user; a REP may change only their own leads"
    allowed = await client.run(MOVE, {"input": move}, role=Role.MANAGER)
    assert allowed["moveLead"]["userErrors"] == []
    viewer = await client.run(
        CREATE_LEAD, {"input": {"pipelineId": pipeline["id"], "title": "x"}}, role=Role.VIEWER
    )
    assert [(e["code"], e["field"]) for e in viewer["createLead"]["userErrors"]] == [("FORBIDDEN", "input")]


async def test_update_reopen_and_activities(client: Client) -> None:
    pipeline = await create_pipeline(client)
    lead = await create_lead(client, pipeline["id"], role=Role.REP)
    updated = await client.run(
        """mutation($input: UpdateLeadInput!) { updateLead(input: $input) {
             lead { version company qualificationScore budget } userErrors { field code } } }""",
        {
            "input": {
                "leadId": lead["id"],
                "company": "Acme",
                "budget": True,
                "authority": True,
                "expectedVersion": 1,
            }
        },
        role=Role.REP,
    )
    assert updated["updateLead"]["lead"] == {
        "version": 2,
        "company": "Acme",
        "qualificationScore": 50,
        "budget": True,
    }
    await client.run(
        CLOSE,
        {"input": {"leadId": lead["id"], "outcome": "LOST", "reason": "timing", "expectedVersion": 2}},
        role=Role.REP,
    )
    reopened = await client.run(
        """mutation($input: ReopenLeadInput!) { reopenLead(input: $input) {
             lead { status version lostReason closedAt } userErrors { field code } } }""",
        {"input": {"leadId": lead["id"], "expectedVersion": 3}},
        role=Role.REP,
    )
    assert reopened["reopenLead"]["lead"] == {
        "status": "OPEN",
        "version": 4,
        "lostReason": "",
        "closedAt": None,
    }
    logged = await client.run(
        """mutation($input: LogActivityInput!) { logActivity(input: $input) {
             activity { id kind subject doneAt owner { email } } userErrors { field code } } }""",
        {"input": {"leadId": lead["id"], "kind": "CALL", "subject": "Intro call"}},
        role=Role.REP,
    )
    activity = logged["logActivity"]["activity"]
    assert (activity["kind"], activity["doneAt"], activity["owner"]["email"]) == (
        "CALL",
        None,
        "rep@example.com",
    )
    done = await client.run(
        """mutation($input: CompleteActivityInput!) { completeActivity(input: $input) {
             activity { doneAt } userErrors { field code } } }""",
        {"input": {"activityId": activity["id"]}},
        role=Role.REP,
    )
    assert done["completeActivity"]["activity"]["doneAt"] is not None
    again = await client.run(
        """mutation($input: CompleteActivityInput!) { completeActivity(input: $input) {
             activity { doneAt } userErrors { field code } } }""",
        {"input": {"activityId": activity["id"]}},
        role=Role.REP,
    )
    assert again["completeActivity"]["userErrors"] == [{"field": "input.activityId", "code": "INVALID"}]


async def test_import_leads_all_or_nothing(client: Client) -> None:
    pipeline = await create_pipeline(client)
    query = """mutation($input: ImportLeadsInput!) { importLeads(input: $input) {
                 importedCount leads { title value stage { name } } userErrors { field message code } } }"""
    bad = "title,value,stage\nA,10,Proposal\nB,-1,Proposal\nC,1,Nowhere\n"
    data = await client.run(query, {"input": {"pipelineId": pipeline["id"], "csv": bad}})
    assert data["importLeads"]["importedCount"] == 0
    assert [(e["field"], e["code"]) for e in data["importLeads"]["userErrors"]] == [
        ("input.csv[row 2].value", "INVALID"),
        ("input.csv[row 3].stage", "NOT_FOUND"),
    ]
    assert (await client.run("{ leads { totalCount } }"))["leads"]["totalCount"] == 0
    good = "title,value,stage\nA,10,Proposal\nB,2.5,\n"
    data = await client.run(query, {"input": {"pipelineId": pipeline["id"], "csv": good}})
    assert data["importLeads"]["leads"] == [
        {"title": "A", "value": "10.00", "stage": {"name": "Proposal"}},
        {"title": "B", "value": "2.50", "stage": {"name": "Lead Generation"}},
    ]


async def test_import_leads_reports_all_four_problems_of_a_row_and_reads_a_header_map(client: Client) -> None:
    pipeline = await create_pipeline(client)
    query = """mutation($input: ImportLeadsInput!) { importLeads(input: $input) {
                 importedCount leads { title value stage { name } expectedCloseDate }
                 userErrors { field code } } }"""
    bad = {"pipelineId": pipeline["id"], "csv": "title,value,stage,budget\n,-1,Nowhere,perhaps\n"}
    data = await client.run(query, {"input": bad})
    assert [(e["field"], e["code"]) for e in data["importLeads"]["userErrors"]] == [
        ("input.csv[row 1].title", "INVALID"),
        ("input.csv[row 1].value", "INVALID"),
        ("input.csv[row 1].stage", "NOT_FOUND"),
        ("input.csv[row 1].budget", "INVALID"),
    ]
    mapped = {
        "pipelineId": pipeline["id"],
        "csv": "Deal Name,Amount,Deal Stage,Close\nAcme,12.5,proposal,03/15/2027\n",
        "map": "Deal Name=title,Amount=value,Deal Stage=stage,Close=expected_close_date",
    }
    data = await client.run(query, {"input": mapped})
    assert data["importLeads"]["leads"] == [
        {"title": "Acme", "value": "12.50", "stage": {"name": "Proposal"}, "expectedCloseDate": "2027-03-15"}
    ]
    refused = await client.run(query, {"input": {**mapped, "map": "Deal Name=nonsense"}})
    assert refused["importLeads"]["userErrors"] == [{"field": "input.map", "code": "INVALID"}]
