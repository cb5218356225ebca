"""From a validated operation to what it selects, table by table, or :class:`Unplannable`.

Fields are collected by graphql-core's own ``collect_fields``/``collect_subfields`` (fragments,
aliases, merging of same-named fields, ``@include``/``@skip``), so a plan's keys come in the order
and shape the executor gives them. Only the fields listed here are plannable; a field missing from
these tables (one with a resolver of its own: ``stages``, ``history``...) makes the whole operation go
the reference way. ``daysInStage`` and ``isStalled`` are computed by the statement from the request's
clock reading, as their resolvers compute them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    Visitor,
    visit,
)
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    GroupedFieldSet,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues


class Unplannable(Exception):
    """The operation goes the reference way; the message says why."""


@dataclass(frozen=True, slots=True)
class Column:
    """A stored field: how to format ``column`` of the object's table."""

    key: str
    kind: str  # text, int, bool, money, datetime, date, float, gid, is_set
    column: str
    nullable: bool = False


@dataclass(frozen=True, slots=True)
class Computed:
    """A field computed from the row and the request's clock: ``days_in_stage`` or ``is_stalled``."""

    key: str
    kind: str


@dataclass(frozen=True, slots=True)
class Typename:
    key: str
    name: str


@dataclass(frozen=True, slots=True)
class Relation:
    """A to-one relation, joined as ``table`` on ``foreign_key`` of the parent."""

    key: str
    name: str  # the field name: the join's alias suffix
    table: str
    type_name: str
    foreign_key: str
    nullable: bool
    fields: tuple[Selected, ...]


Selected = Column | Computed | Typename | Relation


@dataclass(frozen=True, slots=True)
class Connection:
    """A lead connection: which of its parts are selected, in order (kind, key, sub-parts)."""

    key: str
    parts: tuple[tuple[str, str, Any], ...]


@dataclass(frozen=True, slots=True)
class RootField:
    key: str
    name: str  # leads, lead, node, pipeline, pipelines
    definition: GraphQLField
    node: FieldNode
    selection: Connection | tuple[Selected, ...]
    variables: tuple[str, ...]  # the variables its arguments read: all its arguments depend on


@dataclass(frozen=True, slots=True)
class OperationPlan:
    roots: tuple[RootField, ...]


# Stored fields per GraphQL type: name -> (kind, column, nullable).
_SCALARS: dict[str, dict[str, tuple[str, str, bool]]] = {
    "Lead": {
        "id": ("gid", "id", False),
        "title": ("text", "title", False),
        "company": ("text", "company", False),
        "contactName": ("text", "contact_name", False),
        "contactEmail": ("text", "contact_email", False),
        "contactPhone": ("text", "contact_phone", False),
        "source": ("text", "source", False),
        "value": ("money", "value_cents", False),
        "status": ("text", "status", False),
        "lostReason": ("text", "lost_reason", False),
        "expectedCloseDate": ("date", "expected_close_date", True),
        "budget": ("bool", "budget", False),
        "authority": ("bool", "authority", False),
        "need": ("bool", "need", False),
        "timeline": ("bool", "timeline", False),
        "qualificationScore": ("int", "qualification_score", False),
        "createdAt": ("datetime", "created_at", False),
        "updatedAt": ("datetime", "updated_at", False),
        "closedAt": ("datetime", "closed_at", True),
        "stageEnteredAt": ("datetime", "stage_entered_at", False),
        "version": ("int", "version", False),
    },
    "Stage": {
        "id": ("gid", "id", False),
        "name": ("text", "name", False),
        "position": ("int", "position", False),
        "probability": ("float", "probability", True),
        "targetDays": ("int", "target_days", True),
        "exitCriteria": ("text", "exit_criteria", False),
        "isPostSale": ("bool", "is_post_sale", False),
        "removed": ("is_set", "removed_at", False),
    },
    "User": {
        "id": ("gid", "id", False),
        "name": ("text", "name", False),
        "email": ("text", "email", False),
        "role": ("text", "role", False),
        "capacity": ("int", "capacity", False),
        "active": ("bool", "active", False),
        "createdAt": ("datetime", "created_at", False),
    },
    "Pipeline": {
        "id": ("gid", "id", False),
        "name": ("text", "name", False),
        "currency": ("text", "currency", False),
        "description": ("text", "description", False),
        "archived": ("bool", "archived", False),
        "createdAt": ("datetime", "created_at", False),
        "updatedAt": ("datetime", "updated_at", False),
    },
}
# To-one relations per type: name -> (table, type, foreign key of the parent, nullable).
_RELATIONS: dict[str, dict[str, tuple[str, str, str, bool]]] = {
    "Lead": {
        "stage": ("stages", "Stage", "stage_id", False),
        "owner": ("users", "User", "owner_id", True),
        "pipeline": ("pipelines", "Pipeline", "pipeline_id", False),
    },
    "Stage": {"pipeline": ("pipelines", "Pipeline", "pipeline_id", False)},
    "User": {},
    "Pipeline": {},
}
# Fields computed from a row and the clock, per type: name -> kind.
_COMPUTED: dict[str, dict[str, str]] = {"Lead": {"daysInStage": "days_in_stage", "isStalled": "is_stalled"}}
TABLES = {"Lead": "leads", "Stage": "stages", "User": "users", "Pipeline": "pipelines"}
_ROOTS = {"leads", "lead", "node", "pipeline", "pipelines"}


class Planner:
    """Plans one operation of one document with the request's variables (only ``@include``/``@skip``
    depend on them: the plan is cached per their values)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: VariableValues,
    ) -> None:
        self.schema = schema
        self.operation = operation
        self.variables = variables
        self.fragments = {
            d.name.value: FragmentDetails(d)
            for d in document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }

    def plan(self) -> OperationPlan:
        if self.operation.operation is not OperationType.QUERY:
            raise Unplannable(f"a {self.operation.operation.value}")
        root_type = self.schema.query_type
        assert root_type is not None
        collected = collect_fields(self.schema, self.fragments, self.variables, root_type, self.operation)
        if collected.new_defer_usages:
            raise Unplannable("@defer")
        roots = []
        for key, details in collected.grouped_field_set.items():
            name = self._single_field(details)
            if name not in _ROOTS:
                raise Unplannable(f"Query.{name}")
            definition = root_type.fields[name]
            node = details[0].node  # validation has checked that merged fields share their arguments
            selection: Connection | tuple[Selected, ...]
            if name == "leads":
                selection = self._connection(key, details)
            else:
                type_name = "Pipeline" if name.startswith("pipeline") else "Lead"
                selection = self._object(type_name, details)
            roots.append(RootField(key, name, definition, node, selection, _variables_of(node)))
        return OperationPlan(tuple(roots))

    def _single_field(self, details: list[FieldDetails]) -> str:
        for detail in details:
            if detail.defer_usage is not None or detail.fragment_variable_values is not None:
                raise Unplannable("@defer or fragment variables")
        return details[0].node.name.value

    def _subfields(self, type_name: str, details: list[FieldDetails]) -> GroupedFieldSet:
        object_type = self.schema.get_type(type_name)
        assert isinstance(object_type, GraphQLObjectType)
        collected = collect_subfields(
            self.schema, self.fragments, self.variables, self.operation, object_type, details
        )
        if collected.new_defer_usages:
            raise Unplannable("@defer")
        return collected.grouped_field_set

    def _object(self, type_name: str, details: list[FieldDetails]) -> tuple[Selected, ...]:
        selected: list[Selected] = []
        scalars, relations = _SCALARS[type_name], _RELATIONS[type_name]
        for key, sub in self._subfields(type_name, details).items():
            name = self._single_field(sub)
            if name == "__typename":
                selected.append(Typename(key, type_name))
            elif name in scalars:
                kind, column, nullable = scalars[name]
                selected.append(Column(key, kind, column, nullable))
            elif name in _COMPUTED.get(type_name, {}):
                selected.append(Computed(key, _COMPUTED[type_name][name]))
            elif name in relations:
                table, target, foreign_key, nullable = relations[name]
                fields = self._object(target, sub)
                selected.append(Relation(key, name, table, target, foreign_key, nullable, fields))
            else:
                raise Unplannable(f"{type_name}.{name}")
        return tuple(selected)

    def _connection(self, key: str, details: list[FieldDetails]) -> Connection:
        parts: list[tuple[str, str, Any]] = []
        for sub_key, sub in self._subfields("LeadConnection", details).items():
            name = self._single_field(sub)
            if name == "__typename":
                parts.append(("typename", sub_key, "LeadConnection"))
            elif name in ("totalCount", "totalValue"):
                parts.append((name, sub_key, None))
            elif name == "nodes":
                parts.append(("nodes", sub_key, self._object("Lead", sub)))
            elif name == "pageInfo":
                page_info = []
                for info_key, info in self._subfields("PageInfo", sub).items():
                    page_info.append((self._single_field(info), info_key))
                parts.append(("pageInfo", sub_key, tuple(page_info)))
            elif name == "edges":
                edge: list[tuple[str, str, Any]] = []
                for edge_key, edge_sub in self._subfields("LeadEdge", sub).items():
                    edge_name = self._single_field(edge_sub)
                    if edge_name == "node":
                        edge.append(("node", edge_key, self._object("Lead", edge_sub)))
                    else:  # cursor or __typename: nothing else is selectable on an edge
                        edge.append((edge_name, edge_key, None))
                parts.append(("edges", sub_key, tuple(edge)))
            else:
                raise Unplannable(f"LeadConnection.{name}")
        return Connection(key, tuple(parts))


def _variables_of(node: FieldNode) -> tuple[str, ...]:
    names: list[str] = []

    class Variables(Visitor):
        def enter_variable(self, variable: VariableNode, *_: Any) -> None:
            if variable.name.value not in names:
                names.append(variable.name.value)

    for argument in node.arguments or ():
        visit(argument, Variables())
    return tuple(names)
