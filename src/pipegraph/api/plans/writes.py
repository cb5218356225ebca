"""Compiled writes: ``updateLead``, ``moveLead``, ``closeLead`` and ``reopenLead`` without graphql-core.

The rule: a mutation whose only root field is one of those four, whose payload selection reads only
stored fields (``lead`` with its scalar fields and its ``stage`` and ``owner`` with theirs,
``userErrors``, ``__typename``), is answered here when the direct path
(:mod:`pipegraph.services.lead_writes`) makes the change: its input is converted as Strawberry converts
it and decoded by the resolver's own direct change (``DIRECT_CHANGES``), and the answer's JSON is built
from the lead written, field by field with the schema's own output coercion. Whenever the direct path
declines (a rule refuses the change, a stale version, a webhook endpoint enabled, an error), nothing has
been written and Strawberry answers the request as it would have: errors are always its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
)
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    GroupedFieldSet,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues, get_argument_values
from strawberry.types.arguments import convert_arguments

from pipegraph.api.plans.planner import Unplannable
from pipegraph.api.resolvers.common import attempt_direct
from pipegraph.api.resolvers.leads import DIRECT_CHANGES
from pipegraph.db.models import User
from pipegraph.services.lead_writes import LeadWrites

_DEFINITION = "strawberry-definition"


@dataclass(frozen=True, slots=True)
class Leaf:
    key: str
    attribute: str
    type: Any  # the named leaf type, whose ``coerce_output_value`` formats the value


@dataclass(frozen=True, slots=True)
class Object:
    key: str
    attribute: str
    fields: tuple[Selected, ...]


@dataclass(frozen=True, slots=True)
class Constant:
    """A field whose answer is known once the change is made: ``__typename``, ``userErrors`` ([])."""

    key: str
    value: Any


Selected = Leaf | Object | Constant


@dataclass(frozen=True, slots=True)
class WritePlan:
    key: str  # the root field's response name
    name: str  # updateLead, moveLead, closeLead or reopenLead
    definition: GraphQLField
    node: Any  # the root FieldNode
    payload: tuple[Selected, ...]


def plan_write(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: VariableValues,
) -> WritePlan:
    """What a mutation selects, or :class:`Unplannable` with the reason."""
    fragments = {
        d.name.value: FragmentDetails(d)
        for d in document.definitions
        if isinstance(d, FragmentDefinitionNode)
    }
    root_type = schema.mutation_type
    assert root_type is not None
    collected = collect_fields(schema, fragments, variables, root_type, operation)
    if collected.new_defer_usages:
        raise Unplannable("@defer")
    fields = list(collected.grouped_field_set.items())
    if len(fields) != 1:
        raise Unplannable("not one mutation")
    key, details = fields[0]
    _single(details)
    name = details[0].node.name.value
    if name not in DIRECT_CHANGES:
        raise Unplannable(f"Mutation.{name}")
    definition = root_type.fields[name]

    def subfields(object_type: GraphQLObjectType, of: list[FieldDetails]) -> GroupedFieldSet:
        sub = collect_subfields(schema, fragments, variables, operation, object_type, of)
        if sub.new_defer_usages:
            raise Unplannable("@defer")
        return sub.grouped_field_set

    def selection(object_type: GraphQLObjectType, of: list[FieldDetails]) -> tuple[Selected, ...]:
        selected: list[Selected] = []
        for sub_key, sub in subfields(object_type, of).items():
            _single(sub)
            field_name = sub[0].node.name.value
            if field_name == "__typename":
                selected.append(Constant(sub_key, object_type.name))
                continue
            field = object_type.fields[field_name]
            named = field.type.of_type if is_non_null_type(field.type) else field.type
            if object_type.name == "LeadPayload" and field_name == "userErrors":
                selected.append(Constant(sub_key, []))  # a change the direct path makes has none
                continue
            attribute = getattr(field.extensions.get(_DEFINITION), "python_name", None)
            if (
                field.args
                or not getattr(field.resolve, "_is_default", False)
                or not isinstance(attribute, str)
            ):
                raise Unplannable(f"{object_type.name}.{field_name}")
            if is_leaf_type(named):
                selected.append(Leaf(sub_key, attribute, named))
            elif is_object_type(named) and not is_list_type(named):
                selected.append(Object(sub_key, attribute, selection(named, sub)))
            else:
                raise Unplannable(f"{object_type.name}.{field_name}")
        return tuple(selected)

    payload_type = definition.type.of_type if is_non_null_type(definition.type) else definition.type
    assert isinstance(payload_type, GraphQLObjectType)
    return WritePlan(key, name, definition, details[0].node, selection(payload_type, details))


def _single(details: list[FieldDetails]) -> None:
    for detail in details:
        if detail.defer_usage is not None or detail.fragment_variable_values is not None:
            raise Unplannable("@defer or fragment variables")


async def write(
    schema: GraphQLSchema,
    plan: WritePlan,
    variables: VariableValues,
    writes: LeadWrites,
    viewer: User,
) -> dict[str, Any] | None:
    """The ``data`` of the change made, or None when the direct path declined it (nothing written)."""
    raw = get_argument_values(plan.definition, plan.node, variables)
    strawberry_schema = schema._strawberry_schema  # type: ignore[attr-defined]
    arguments = convert_arguments(
        raw,
        plan.definition.extensions[_DEFINITION].arguments,
        scalar_registry=strawberry_schema.schema_converter.scalar_registry,
        config=strawberry_schema.config,
    )
    lead = await attempt_direct(writes, viewer, DIRECT_CHANGES[plan.name](arguments["input"]))
    if lead is None:
        return None
    payload = {"lead": lead}
    return {plan.key: _object(plan.payload, payload)}


def _object(fields: tuple[Selected, ...], source: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for selected in fields:
        if isinstance(selected, Constant):
            result[selected.key] = (
                list(selected.value) if isinstance(selected.value, list) else selected.value
            )
            continue
        value = (
            source[selected.attribute] if isinstance(source, dict) else getattr(source, selected.attribute)
        )
        if value is None:
            result[selected.key] = None
        elif isinstance(selected, Leaf):
            # The lead is built by ``types.Lead.from_model``, as the resolvers build it, so every
            # non-null field has its value: the change is made, there is no going back from here.
            result[selected.key] = selected.type.coerce_output_value(value)
        else:
            result[selected.key] = _object(selected.fields, value)
    return result


def encode(data: dict[str, Any], extensions: dict[str, Any]) -> bytes:
    """The response as Strawberry's view encodes it."""
    return json.dumps({"data": data, "extensions": extensions}, separators=(",", ":")).encode()
