from __future__ import annotations

from pathlib import Path

from pipegraph.api.descriptions import undescribed
from pipegraph.api.schema import build_schema, print_schema

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_committed_schema_matches_the_code() -> None:
    assert SCHEMA_FILE.read_text() == print_schema(), (
        "schema.graphql is out of date: run `pipegraph export-schema --output schema.graphql`"
    )


def test_schema_has_the_relay_node_interface_and_every_mutation() -> None:
    printed = print_schema()
    assert "interface Node" in printed
    mutation_type = build_schema()._schema.mutation_type
    assert mutation_type is not None
    mutations = mutation_type.fields
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
        assert list(mutations[mutation].args) == ["input"], mutation


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


def test_every_type_field_argument_and_enum_value_is_described() -> None:
    schema = build_schema()
    assert undescribed(schema._schema) == []
    # Introspection, which GraphiQL and code generators read, carries them too.
    result = schema.execute_sync('{ __type(name: "LeadFilter") { description inputFields { description } } }')
    assert result.errors is None
    assert result.data is not None
    described = result.data["__type"]
    assert described["description"]
    assert all(field["description"] for field in described["inputFields"])
