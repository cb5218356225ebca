"""A faster path through graphql-core for the commonest fields: attribute reads.

graphql-core executes every field the same way: a path, a resolve-info object, Strawberry's resolver
wrapper, an awaitable check and a completion dispatch. On a page of leads most fields only read an
attribute of a plain object (``title``, ``value``, ``stage``, ``edges``...), and that machinery costs
more than the rest of the request. This execution context reads such fields directly: leaves are
coerced by the same leaf type, objects and lists of objects recurse with the same sub-selections.
Errors are handled as graphql-core does (``handle_field_error``, so nulls bubble up the same way),
and everything else (resolvers, arguments, abstract types, ``__typename``, deferred fragments, a
value of an unexpected type) goes to the standard path, so results are the same as without it.

It stays out of the way when field middleware is installed (a schema extension with a ``resolve``
hook), since that must see every field.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLID,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLString,
    Undefined,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

_DEFINITION = "strawberry-definition"
_BUILT_IN = {"String": GraphQLString, "ID": GraphQLID, "Boolean": GraphQLBoolean}
_PASSTHROUGH = {"String": str, "ID": str, "Boolean": bool}
_PLANS = "_pipegraph_field_plans"
_SPLITS = "_pipegraph_splits"
_SHAPES = "_pipegraph_shapes"
_MEMOS = (_SPLITS, _SHAPES)


class _Kind(enum.Enum):
    LEAF = 1
    OBJECT = 2
    OBJECT_LIST = 3


@dataclass(frozen=True, slots=True)
class _Plan:
    kind: _Kind
    attribute: str
    return_type: GraphQLOutputType
    named_type: Any  # the leaf type, or the object type (of the items)
    non_null: bool
    item_type: GraphQLOutputType | None = None
    item_non_null: bool = False
    origin: type | None = None
    # Values of exactly this type are their own output (a str for String and ID, a bool for Boolean).
    passthrough: type | None = None


def _unwrap(type_: Any) -> tuple[Any, bool]:
    return (type_.of_type, True) if is_non_null_type(type_) else (type_, False)


def _origin(object_type: GraphQLObjectType) -> type | None:
    origin = getattr(object_type.extensions.get(_DEFINITION), "origin", None)
    return origin if isinstance(origin, type) else None


def _plan(parent_type: GraphQLObjectType, field_name: str) -> _Plan | None:
    """How to execute ``field_name`` directly, or None when it needs the standard path."""
    field_def = parent_type.fields.get(field_name)
    if field_def is None or field_def.args:
        return None
    # Strawberry marks the resolvers of fields that only read an attribute ("basic" fields).
    if not getattr(field_def.resolve, "_is_default", False):
        return None
    attribute = getattr(field_def.extensions.get(_DEFINITION), "python_name", None)
    if not isinstance(attribute, str):
        return None
    named, non_null = _unwrap(field_def.type)
    if is_leaf_type(named):
        passthrough = _PASSTHROUGH.get(named.name) if named is _BUILT_IN.get(named.name) else None
        return _Plan(_Kind.LEAF, attribute, field_def.type, named, non_null, passthrough=passthrough)
    if is_object_type(named) and (origin := _origin(named)) is not None:
        return _Plan(_Kind.OBJECT, attribute, field_def.type, named, non_null, origin=origin)
    if is_list_type(named):
        item_type = named.of_type
        item_named, item_non_null = _unwrap(item_type)
        if is_object_type(item_named) and (origin := _origin(item_named)) is not None:
            return _Plan(
                _Kind.OBJECT_LIST,
                attribute,
                field_def.type,
                item_named,
                non_null,
                item_type,
                item_non_null,
                origin,
            )
    return None


def _plans(schema: GraphQLSchema) -> dict[tuple[str, str], _Plan | None]:
    plans: dict[tuple[str, str], _Plan | None] | None = getattr(schema, _PLANS, None)
    if plans is None:
        plans = {}
        setattr(schema, _PLANS, plans)
    return plans


_Planned = tuple[str, _Plan, FieldDetailsList]  # response name, plan, field details


class _Slow(Exception):
    """This field goes to the standard path."""


class PerEventExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Each subscription event gets its own memo of collected subfields.

    graphql-core copies the subscription's executor shallowly per event, so every event's subfields
    (collected afresh, keyed by the identity of lists made for that event) would join one memo that
    lives as long as the subscription: about 3 KB per event, held until the socket closes.
    """

    def build_per_event_executor(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}
        for memo in _MEMOS:
            executor.__dict__.pop(memo, None)
        return executor


class FastFieldExecutionContext(PerEventExecutionContext):
    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> Awaitable[dict[str, Any]] | dict[str, Any]:
        middleware = self.middleware_manager
        if middleware is not None and middleware.middlewares:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        planned, rest = self._split(parent_type, grouped_field_set)
        done: dict[str, Any] = {}
        pending: list[str] = []
        for response_name, plan, details in planned:
            try:
                result = self._execute_planned(plan, parent_type, source_value, path, response_name, details)
            except _Slow:
                rest = {
                    name: d for name, d in grouped_field_set.items() if name in rest or name == response_name
                }
                continue
            done[response_name] = result
            if plan.kind is not _Kind.LEAF and self.is_awaitable(result):
                pending.append(response_name)
        if not rest:
            if not pending:
                return done
            others: Any = {}
        else:
            others = super().execute_fields(parent_type, source_value, path, rest, position_context)
            if not pending and not self.is_awaitable(others):
                return _in_order(grouped_field_set, done, others)

        async def gather() -> dict[str, Any]:
            # All at once, as graphql-core does: DataLoaders batch only loads started in the same tick.
            awaitables = [done[name] for name in pending]
            others_pending = self.is_awaitable(others)
            if others_pending:
                awaitables.append(others)
            # One alone (a root field with arguments) is awaited as it is: gather would wrap it in a task.
            values = [await awaitables[0]] if len(awaitables) == 1 else await asyncio.gather(*awaitables)
            done.update(zip(pending, values, strict=False))
            return _in_order(grouped_field_set, done, values[-1] if others_pending else others)

        return gather()

    def _split(
        self, parent_type: GraphQLObjectType, grouped_field_set: GroupedFieldSet
    ) -> tuple[list[_Planned], GroupedFieldSet]:
        """The fields with a plan, and the rest; worked out once per selection set and request, since
        every item of a list shares its selection set (graphql-core memoizes it)."""
        splits: dict[tuple[str, int], tuple[GroupedFieldSet, list[_Planned], GroupedFieldSet]]
        splits = self.__dict__.setdefault(_SPLITS, {})
        key = (parent_type.name, id(grouped_field_set))
        cached = splits.get(key)
        if cached is not None:
            return cached[1], cached[2]
        plans = _plans(self.schema)
        planned: list[_Planned] = []
        rest: GroupedFieldSet = {}
        for response_name, details in grouped_field_set.items():
            node = details[0].node
            plan_key = (parent_type.name, node.name.value)
            if plan_key not in plans:
                plans[plan_key] = _plan(parent_type, node.name.value)
            plan = plans[plan_key]
            if plan is None or node.arguments:
                rest[response_name] = details
            else:
                planned.append((response_name, plan, details))
        # The selection set is kept alive with its split, so its id cannot be reused meanwhile.
        splits[key] = (grouped_field_set, planned, rest)
        return planned, rest

    def _execute_planned(
        self,
        plan: _Plan,
        parent_type: GraphQLObjectType,
        source: Any,
        path: Path | None,
        response_name: str,
        details: FieldDetailsList,
    ) -> Any:
        try:
            value = getattr(source, plan.attribute)
        except Exception:
            raise _Slow from None
        if value is None:
            if plan.non_null:
                raise _Slow  # the standard path reports the null
            return None
        if plan.kind is _Kind.LEAF:
            coerced = plan.named_type.coerce_output_value(value)
            if coerced is None or coerced is Undefined:
                raise _Slow
            return coerced
        field_path = Path(path, response_name, parent_type.name)
        if plan.kind is _Kind.OBJECT:
            if not isinstance(value, plan.origin):  # type: ignore[arg-type]
                raise _Slow
            return self._object(plan.named_type, plan.return_type, details, field_path, value)
        if not isinstance(value, list) or not all(map(isinstance, value, repeat(plan.origin))):  # type: ignore[arg-type]
            raise _Slow
        assert plan.item_type is not None
        shape = self._shape(plan.named_type, details)
        if shape is not None:
            try:
                return [_run_shape(shape, item) for item in value]
            except _Slow:
                pass  # something unusual in some item: the general route below reports it
        try:
            items = [
                self._object(plan.named_type, plan.item_type, details, Path(field_path, index, None), item)
                for index, item in enumerate(value)
            ]
        except _Slow:
            raise
        except Exception as error:  # a non-null item failed: the list field takes the error
            self.handle_field_error(error, plan.return_type, details, field_path)
            return None
        if not any(self.is_awaitable(item) for item in items):
            return items

        async def gather_items() -> list[Any]:
            awaited = iter(await asyncio.gather(*(item for item in items if self.is_awaitable(item))))
            return [next(awaited) if self.is_awaitable(item) else item for item in items]

        return self._guard(gather_items(), plan.return_type, details, field_path)

    def _shape(self, object_type: GraphQLObjectType, details: FieldDetailsList) -> _Shape | None:
        """The selection on ``object_type`` as a :class:`_Shape`, or None if some field needs more."""
        shapes: dict[tuple[str, int], tuple[FieldDetailsList, _Shape | None]]
        shapes = self.__dict__.setdefault(_SHAPES, {})
        key = (object_type.name, id(details))
        cached = shapes.get(key)
        if cached is not None:
            return cached[1]
        shape = self._make_shape(object_type, details)
        shapes[key] = (details, shape)  # kept alive so its id cannot be reused meanwhile
        return shape

    def _make_shape(self, object_type: GraphQLObjectType, details: FieldDetailsList) -> _Shape | None:
        grouped, defer_usages, _ = self.collect_subfields(object_type, details)
        if defer_usages:
            return None
        planned, rest = self._split(object_type, grouped)
        if rest:
            return None
        fields: list[tuple[str, _Plan, _Shape | None]] = []
        for response_name, plan, field_details in planned:
            if plan.kind is _Kind.LEAF:
                fields.append((response_name, plan, None))
            elif plan.kind is _Kind.OBJECT:
                sub_shape = self._shape(plan.named_type, field_details)
                if sub_shape is None:
                    return None
                fields.append((response_name, plan, sub_shape))
            else:
                return None
        return _Shape(tuple(fields))

    def _object(
        self,
        object_type: GraphQLObjectType,
        return_type: GraphQLOutputType,
        details: FieldDetailsList,
        path: Path,
        value: Any,
    ) -> Any:
        grouped, defer_usages, _ = self.collect_subfields(object_type, details)
        if defer_usages:
            raise _Slow
        try:
            result = self.execute_fields(object_type, value, path, grouped, None)
        except Exception as error:
            self.handle_field_error(error, return_type, details, path)
            return None
        if self.is_awaitable(result):
            return self._guard(result, return_type, details, path)
        return result

    async def _guard(
        self, result: Awaitable[Any], return_type: GraphQLOutputType, details: FieldDetailsList, path: Path
    ) -> Any:
        try:
            return await result
        except Exception as error:
            self.handle_field_error(error, return_type, details, path)
            return None


@dataclass(frozen=True, slots=True)
class _Shape:
    """A selection set whose every field reads an attribute: leaves, or objects of the same kind.

    The items of a list with such a selection (a page of leads with their stage and owner) are
    executed in a plain loop, without per-field paths and completion calls. Anything unusual (a null
    in a non-null field, a value of another type, a leaf that does not coerce) raises ``_Slow`` and
    the list takes the general route, which reports it as graphql-core does.
    """

    fields: tuple[tuple[str, _Plan, _Shape | None], ...]  # response name, plan, sub-shape of objects


def _run_shape(shape: _Shape, value: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for response_name, plan, sub_shape in shape.fields:
        try:
            field_value = getattr(value, plan.attribute)
            if field_value is None:
                if plan.non_null:
                    raise _Slow
                result[response_name] = None
            elif sub_shape is None:
                if type(field_value) is plan.passthrough:
                    result[response_name] = field_value
                    continue
                coerced = plan.named_type.coerce_output_value(field_value)
                if coerced is None or coerced is Undefined:
                    raise _Slow
                result[response_name] = coerced
            elif isinstance(field_value, plan.origin):  # type: ignore[arg-type]
                result[response_name] = _run_shape(sub_shape, field_value)
            else:
                raise _Slow
        except _Slow:
            raise
        except Exception:
            raise _Slow from None
    return result


def _in_order(
    grouped_field_set: GroupedFieldSet, done: dict[str, Any], others: dict[str, Any]
) -> dict[str, Any]:
    """Keys in selection order, as the standard path gives them."""
    merged = {}
    for name in grouped_field_set:
        if name in done:
            merged[name] = done[name]
        elif name in others:
            merged[name] = others[name]
    return merged
