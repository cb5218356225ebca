from __future__ import annotations

from pathlib import Path

from pipegraph.api.schema import print_schema

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_committed_schema_matches_the_code() -> None:
    assert SCHEMA_FILE.read_text() == print_schema(), (
        "schema.graphql is out of date: run `pipegraph export-schema --output schema.graphql`"
    )


def test_schema_has_the_relay_node_interface_and_every_mutation() -> None:
    printed = print_schema()
    assert "interface Node" in printed
    for mutation in (
        "createPipeline",
        "updatePipeline",
        "addStage",
        "updateStage",
        "reorderStages",
        "removeStage",
        "createLead",
        "updateLead",
        "moveLead",
        "closeLead",
        "reopenLead",
        "logActivity",
        "completeActivity",
        "createUser",
        "updateUser",
        "importLeads",
    ):
        assert f"  {mutation}(input: " in printed, mutation


def test_user_error_codes_are_an_enum_covering_what_services_raise() -> None:
    from pipegraph.api.errors import UserError, UserErrorCode
    from pipegraph.errors import (
        ConflictError,
        NotFoundError,
        PermissionDeniedError,
        PipegraphError,
        ValidationError,
    )

    for error_type in (ValidationError, NotFoundError, ConflictError, PermissionDeniedError):
        error = error_type("no", field="title")
        assert UserError.from_error(error).code is UserErrorCode[error.code]
    assert UserError.from_error(PipegraphError("odd")).code is UserErrorCode.ERROR
