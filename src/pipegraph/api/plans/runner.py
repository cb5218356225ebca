"""Serving a plannable request: the plan cache, arguments, cost and throttle, one statement, the bytes.

:meth:`PlannedReads.serve` answers a request or returns None, and then Strawberry answers it. It
returns None whenever the answer could differ from Strawberry's: a body Strawberry would refuse, a
document that does not parse or validate, a field outside the plan, arguments a resolver would refuse
(the reference path then reports the error, with its code), a cost over the maximum or a throttled
key (the reference path refuses it with the same figures), a database error.
"""

from __future__ import annotations

import base64
import codecs
import json
import logging
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any

from graphql import (
    DirectiveNode,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    get_operation_ast,
    parse,
    specified_rules,
    visit,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from graphql.language import Visitor
from starlette.requests import Request
from starlette.responses import Response
from strawberry.schema.schema import validate_document
from strawberry.types.arguments import convert_arguments

from pipegraph.api import ids
from pipegraph.api.auth import bearer_key
from pipegraph.api.cost import CostPlan
from pipegraph.api.limits import LimitPolicy
from pipegraph.api.plans import sql
from pipegraph.api.plans.connections import Reader
from pipegraph.api.plans.planner import Connection, OperationPlan, Planner, RootField, Unplannable
from pipegraph.api.plans.writes import WritePlan, encode, plan_write, write
from pipegraph.db import availability
from pipegraph.db.models import User
from pipegraph.db.types import utcnow
from pipegraph.services import queries
from pipegraph.services.lead_writes import LeadWrites

logger = logging.getLogger("pipegraph.api.plans")
CACHE_SIZE = 1024
BINDS_PER_TEMPLATE = 256  # arguments bound per template, by the values of the variables they read
_ABSENT = object()
_MARKER = re.compile("\x01(.)([^\x02]*)\x02")
_URLSAFE = str.maketrans("+/", "-_")


class _Fallback(Exception):
    """This request goes the reference way."""


@dataclass
class _Template:
    """A parsed, validated query operation; plans per value of the variables that decide
    ``@include``/``@skip``, each a plan or the reason there is none."""

    document: DocumentNode
    operation: OperationDefinitionNode
    directive_variables: tuple[str, ...]
    plans: dict[tuple[Any, ...], OperationPlan | WritePlan | str] = field(default_factory=dict)
    statements: dict[tuple[Any, ...], tuple[str, list[str]]] = field(default_factory=dict)
    binds: OrderedDict[tuple[Any, ...], tuple[Any, dict[str, Any]] | str] = field(default_factory=OrderedDict)


class PlannedReads:
    """Compiled reads for one app (see the package docstring)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        policy: LimitPolicy,
        reader: Reader,
        *,
        cache_size: int = CACHE_SIZE,
        writes: LeadWrites | None = None,
    ) -> None:
        self.schema = schema
        self.writes = writes  # with it, lead changes are compiled too (api/plans/writes.py)
        self.policy = policy
        self.reader = reader
        self.dialect = sql.DIALECTS[reader.dialect]
        self._cache: OrderedDict[tuple[str, str | None], _Template | str] = OrderedDict()
        self._cache_size = cache_size
        self.served = 0
        self.writes_served = 0
        self.fallbacks: Counter[str] = Counter()

    async def close(self) -> None:
        await self.reader.close()

    # -- introspection, for tests and operators --------------------------------------------------

    def explain(self, query: str, operation_name: str | None = None) -> str | None:
        """None if the operation is planned (with its ``@include``/``@skip`` variables unset), else
        why it goes the reference way. Runs nothing."""
        try:
            template = self._template(query, operation_name)
            if template.operation.operation is OperationType.MUTATION:
                self._write_plan(template, VariableValues({}, {}))
                return None
            self._plan(template, VariableValues({}, {}))
        except _Fallback as fallback:
            return str(fallback)
        return None

    # -- the request --------------------------------------------------------------------------------

    async def serve(self, request: Request, viewer: User | None, request_id: str) -> Response | None:
        try:
            body = await self._answer(request, viewer)
        except _Fallback as fallback:
            reason = str(fallback)
            self.fallbacks[reason] += 1
            logger.debug("request %s: reference path (%s)", request_id, reason)
            return None
        self.served += 1
        return Response(body, media_type="application/json", headers={"X-Request-Id": request_id})

    async def _answer(self, request: Request, viewer: User | None) -> bytes:
        headers = request.headers
        if (
            request.method != "POST"
            or viewer is None
            or not headers.get("content-type", "").startswith("application/json")
            or "multipart/mixed" in headers.get("accept", "")
        ):
            raise _Fallback("not a JSON POST")
        body = await request.body()
        if b"\\u0000" in body:  # a NUL in a text: refused by the reference path (api/text_inputs.py)
            raise _Fallback("a NUL character")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise _Fallback("not JSON") from None
        if not isinstance(payload, dict) or not payload.keys() <= {"query", "variables", "operationName"}:
            raise _Fallback("not a single request")
        query, variables, operation_name = (
            payload.get("query"),
            payload.get("variables"),
            payload.get("operationName"),
        )
        if (
            not isinstance(query, str)
            or not isinstance(variables, dict | None)
            or not isinstance(operation_name, str | None)
        ):
            raise _Fallback("not a single request")
        template = self._template(query, operation_name)
        coerced = get_variable_values(
            self.schema, template.operation.variable_definitions or (), variables or {}
        )
        if isinstance(coerced, list):
            raise _Fallback("variables refused")
        if template.operation.operation is OperationType.MUTATION:
            return await self._write(query, operation_name, template, coerced, variables, viewer, request)
        plan = self._plan(template, coerced)
        shape, values = self._bind(template, plan, coerced)
        statement, names = self._statement(template, plan, shape)
        if sql.NOW in names:  # read per request, never kept with the bound arguments
            values[sql.NOW] = self._param(utcnow())
        params = [values[name] for name in names]
        return await self._run(
            query, operation_name, template, plan, variables, viewer, request, statement, params
        )

    def _template(self, query: str, operation_name: str | None) -> _Template:
        key = (query, operation_name)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._prepare(query, operation_name)
            self._cache[key] = entry
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        if isinstance(entry, str):
            raise _Fallback(entry)
        return entry

    def _prepare(self, query: str, operation_name: str | None) -> _Template | str:
        try:
            document = parse(query, max_tokens=self.policy.max_tokens)
        except GraphQLError:
            return "does not parse"
        if self.policy.duplicates.check(document) is not None:
            return "too many duplicate fields"
        if validate_document(self.schema, document, (*specified_rules, *self.policy.validation_rules)):
            return "does not validate"
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            return "no such operation"
        writable = operation.operation is OperationType.MUTATION and self.writes is not None
        if operation.operation is not OperationType.QUERY and not writable:
            return f"a {operation.operation.value}"
        return _Template(document, operation, _directive_variables(document))

    def _plan(self, template: _Template, coerced: VariableValues) -> OperationPlan:
        key = tuple(coerced.coerced.get(name) for name in template.directive_variables)
        plan = template.plans.get(key)
        if plan is None:
            try:
                plan = Planner(self.schema, template.document, template.operation, coerced).plan()
            except Unplannable as refusal:
                plan = str(refusal)
            template.plans[key] = plan
        if not isinstance(plan, OperationPlan):
            raise _Fallback(plan if isinstance(plan, str) else "a mutation")
        return plan

    def _write_plan(self, template: _Template, coerced: VariableValues) -> WritePlan:
        key = tuple(coerced.coerced.get(name) for name in template.directive_variables)
        plan = template.plans.get(key)
        if plan is None:
            try:
                plan = plan_write(self.schema, template.document, template.operation, coerced)
            except Unplannable as refusal:
                plan = str(refusal)
            template.plans[key] = plan
        if not isinstance(plan, WritePlan):
            raise _Fallback(plan if isinstance(plan, str) else "a query")
        return plan

    async def _write(
        self,
        query: str,
        operation_name: str | None,
        template: _Template,
        coerced: VariableValues,
        variables: dict[str, Any] | None,
        viewer: User,
        request: Request,
    ) -> bytes:
        """Cost and throttle as for a read, then the change on the direct path; declined, the
        reference path makes (or refuses) it and charges the budget itself."""
        assert self.writes is not None
        plan = self._write_plan(template, coerced)
        cost, requested, client = self._admit(query, operation_name, template, variables, viewer, request)
        throttle = self.policy.throttle
        try:
            # The direct change handles its own failures (None); what escapes is from converting the
            # arguments, before anything is written.
            data = await write(self.schema, plan, coerced, self.writes, viewer)
        except Exception as error:
            if throttle is not None:
                throttle.settle(client, requested, 0)
            raise _Fallback(f"arguments refused ({type(error).__name__})") from None
        except BaseException:
            if throttle is not None:
                throttle.settle(client, requested, 0)
            raise
        if data is None:
            if throttle is not None:
                throttle.settle(client, requested, 0)
            raise _Fallback("change declined by the direct path")
        actual = cost.actual(data)
        extension: dict[str, Any] = {"requestedQueryCost": requested, "actualQueryCost": actual}
        if throttle is not None:
            extension["throttleStatus"] = throttle.settle(client, requested, actual).as_extension()
        self.writes_served += 1
        return encode(data, {"cost": extension})

    def _admit(
        self,
        query: str,
        operation_name: str | None,
        template: _Template,
        variables: dict[str, Any] | None,
        viewer: User,
        request: Request,
    ) -> tuple[CostPlan, int, str]:
        """The cost plan, the requested cost and the budget's client, admitted as ``QueryLimits``
        admits them (over the maximum or throttled: the reference path refuses it)."""
        policy = self.policy
        cost = policy.analyzer.plan(self.schema, template.document, query, operation_name)
        requested = cost.requested(variables)
        if requested > policy.max_cost:
            raise _Fallback("over the maximum cost")
        key = bearer_key(request.headers.get("authorization"))
        client = f"key:{key}" if key is not None else f"user:{viewer.id}"
        if policy.throttle is not None and not policy.throttle.admit(client, requested).allowed:
            raise _Fallback("throttled")
        return cost, requested, client

    # -- arguments, as the resolvers read them --------------------------------------------------------

    def _bind(
        self, template: _Template, plan: OperationPlan, variables: VariableValues
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        shapes: list[Any] = []
        values: dict[str, Any] = {}
        for index, root in enumerate(plan.roots):
            shape, own = self._bound(template, root, variables)
            shapes.append(shape)
            values.update((f"{index}.{name}", value) for name, value in own.items())
        return tuple(shapes), values

    def _bound(
        self, template: _Template, root: RootField, variables: VariableValues
    ) -> tuple[Any, dict[str, Any]]:
        """A root's shape and parameters, kept per value of the variables its arguments read (building
        Strawberry's input objects is most of a board page's Python time)."""
        try:
            key = (id(root), *(_frozen(variables.coerced.get(name, _ABSENT)) for name in root.variables))
        except TypeError:  # an unhashable value: bound afresh
            key = None
        bound = template.binds.get(key) if key is not None else None
        if bound is None:
            try:
                bound = self._bind_root(root, self._arguments(root, variables))
            except _Fallback as fallback:
                bound = str(fallback)
            except Exception as error:  # the resolver would refuse these arguments: it says how
                bound = f"arguments refused ({type(error).__name__})"
            if key is not None:
                template.binds[key] = bound
                if len(template.binds) > BINDS_PER_TEMPLATE:
                    template.binds.popitem(last=False)
        elif key is not None:
            template.binds.move_to_end(key)
        if isinstance(bound, str):
            raise _Fallback(bound)
        return bound

    def _arguments(self, root: RootField, variables: VariableValues) -> dict[str, Any]:
        """The resolver's keyword arguments (Python names, input objects built), as Strawberry makes them."""
        raw = get_argument_values(root.definition, root.node, variables)
        strawberry_schema = self.schema._strawberry_schema  # type: ignore[attr-defined]
        return convert_arguments(
            raw,
            root.definition.extensions["strawberry-definition"].arguments,
            scalar_registry=strawberry_schema.schema_converter.scalar_registry,
            config=strawberry_schema.config,
        )

    def _bind_root(self, root: RootField, args: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if root.name == "lead":
            return "one", {"pk": ids.decode_as(args["id"], "Lead", field="id")}
        if root.name == "node":
            type_name, pk = ids.decode(args["id"], field="id")
            if type_name != "Lead":
                raise _Fallback(f"node of a {type_name}")
            return "one", {"pk": pk}
        if root.name == "pipeline":
            return "one", {"pk": ids.decode_as(args["id"], "Pipeline", field="id")}
        if root.name == "pipelines":
            return bool(args.get("include_archived", False)), {}
        return self._bind_leads(args)

    def _bind_leads(self, args: dict[str, Any]) -> tuple[sql.LeadsShape, dict[str, Any]]:
        """The listing's arguments as ``CoreQuery.leads`` and ``services.queries.list_leads`` read them."""
        pipeline_id = ids.decode_optional(args.get("pipeline_id"), "Pipeline", field="pipeline_id")
        lead_filter, order_by = args.get("filter"), args.get("order_by")
        service_filter = lead_filter.to_service() if lead_filter is not None else queries.LeadFilter()
        order = order_by.to_service() if order_by is not None else queries.LeadOrder()
        first, last = args.get("first"), args.get("last")
        size, backwards = queries.page_size(first, last)
        values = queries._filter_params(service_filter, dialect=self.dialect.name, now=utcnow())
        names = frozenset(values)  # with "now" for stalledOnly: its value is the request's clock
        values.pop("now", None)
        if pipeline_id is not None:
            values["pipeline_id"] = pipeline_id
            names |= {"pipeline_id"}
        _, kind = sql.ORDER_COLUMNS[order.field.value]
        for side in ("after", "before"):
            cursor = args.get(side)
            if cursor is None:
                continue
            value, lead_id = queries.decode_cursor(cursor, order, field=side)
            if not _cursor_value_fits(kind, value):
                raise _Fallback("a cursor the statement cannot bind")
            values[f"{side}_value"], values[f"{side}_id"] = value, lead_id
        values = {name: self._param(value) for name, value in values.items()}
        shape = sql.LeadsShape(
            names=names,
            order=order.field.value,
            descending=order.descending,
            backwards=backwards,
            after=args.get("after") is not None,
            before=args.get("before") is not None,
            size=size,
        )
        return shape, values

    def _param(self, value: Any) -> Any:
        """A value as the driver takes it: lists (JSON text on SQLite), enum values as text, datetimes
        as SQLite stores them."""
        if isinstance(value, list):
            items = [item.value if hasattr(item, "value") else item for item in value]
            return json.dumps(items) if self.dialect.name == "sqlite" else items
        if isinstance(value, datetime) and self.dialect.name == "sqlite":
            naive = value.astimezone(UTC).replace(tzinfo=None)
            return naive.isoformat(sep=" ", timespec="microseconds")
        return value

    # -- the statement ---------------------------------------------------------------------------------

    def _statement(
        self, template: _Template, plan: OperationPlan, shape: tuple[Any, ...]
    ) -> tuple[str, list[str]]:
        key = (id(plan), shape)
        cached = template.statements.get(key)
        if cached is not None:
            return cached
        params = sql.Params(self.dialect)
        roots: list[tuple[str, str]] = []
        for index, (root, root_shape) in enumerate(zip(plan.roots, shape, strict=True)):

            def named(name: str, cast: str, prefix: str = f"{index}.") -> str:
                return params(prefix + name, cast)

            builder = sql.Builder(self.dialect, named, lambda: params(sql.NOW, "timestamptz"))
            if root.name == "leads":
                assert isinstance(root.selection, Connection)
                value = sql.connection(builder, root.selection, root_shape)
            elif root.name == "pipelines":
                assert isinstance(root.selection, tuple)
                value = sql.pipelines(builder, root.selection, root_shape)
            else:
                assert isinstance(root.selection, tuple)
                table, type_name = ("pipelines", "Pipeline") if root.name == "pipeline" else ("leads", "Lead")
                value = sql.one(builder, table, type_name, root.selection, named("pk", "bigint"))
            roots.append((root.key, value))
        cached = (sql.statement(roots), list(params.names))
        template.statements[key] = cached  # the plan is kept by the template, so its id stays its own
        return cached

    async def _run(
        self,
        query: str,
        operation_name: str | None,
        template: _Template,
        plan: OperationPlan,
        variables: dict[str, Any] | None,
        viewer: User,
        request: Request,
        statement: str,
        params: list[Any],
    ) -> bytes:
        """Cost and throttle as ``QueryLimits`` has them, then the statement."""
        cost, requested, client = self._admit(query, operation_name, template, variables, viewer, request)
        throttle = self.policy.throttle
        try:
            text = await self.reader.fetch_text(statement, params)
        except Exception as error:
            if throttle is not None:
                throttle.settle(client, requested, 0)
            if availability.is_unavailable(error):
                # An outage, not a bug: one line; the reference path answers with its 503.
                logger.warning("a planned read failed: %s", availability.describe(error))
            else:
                logger.exception("a planned read failed; answering it the reference way")
            raise _Fallback("database error") from None
        text, _, counts = text.rpartition(sql.COUNTS)
        data = splice(text)
        actual = _actual_cost(cost, plan, counts, data)
        extension: dict[str, Any] = {"requestedQueryCost": requested, "actualQueryCost": actual}
        if throttle is not None:
            extension["throttleStatus"] = throttle.settle(client, requested, actual).as_extension()
        tail = json.dumps({"cost": extension}, separators=(",", ":"))
        return b'{"data":' + data + b',"extensions":' + tail.encode() + b"}"


def _actual_cost(cost: CostPlan, plan: OperationPlan, counts: str, data: bytes) -> int:
    """``cost.actual`` of the data, from the statement's counts where they decide it."""
    nodes = {node.key: node for node in cost.roots}
    if len(nodes) == len(cost.roots) == len(plan.roots):
        total = 0
        for root, count in zip(plan.roots, counts.split(","), strict=True):
            node = nodes.get(root.key)
            value = node.counted(int(count)) if node is not None else None
            if value is None:
                break
            total += value
        else:
            return total
    return cost.actual(json.loads(data))


def _frozen(value: Any) -> Any:
    """A coerced variable's value as a key: equal only when it binds the same (``1.0`` and ``1.00``
    are equal Decimals, and ``True == 1``, so scalars go by type and ``repr``)."""
    if isinstance(value, dict):
        return ("{", *((name, _frozen(item)) for name, item in value.items()))
    if isinstance(value, list):
        return ("[", *(_frozen(item) for item in value))
    if value is None or value is _ABSENT:
        return value
    return (type(value), repr(value))


def _cursor_value_fits(kind: str, value: Any) -> bool:
    if kind == "datetime":
        return isinstance(value, datetime) and value.tzinfo is not None
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


def _directive_variables(document: DocumentNode) -> tuple[str, ...]:
    names: list[str] = []

    class Directives(Visitor):
        def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
            for argument in node.arguments or ():
                if isinstance(argument.value, VariableNode) and argument.value.name.value not in names:
                    names.append(argument.value.name.value)

    visit(document, Directives())
    return tuple(names)


# -- the bytes ----------------------------------------------------------------------------------------


def _replace(match: re.Match[str]) -> str:
    kind, payload = match.group(1), match.group(2)
    if kind == "F":
        return repr(float(payload))
    if kind == "C" and not (payload.isascii() and "\x7f" not in payload):
        payload = json.dumps(json.loads(payload), separators=(",", ":"))
    return base64.b64encode(payload.encode()).decode().translate(_URLSAFE)


def _json_escapes(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeEncodeError)
    return encode_basestring_ascii(error.object[error.start : error.end])[1:-1], error.end


_ESCAPES = "pipegraph.plans.json_escapes"
codecs.register_error(_ESCAPES, _json_escapes)


def splice(text: str) -> bytes:
    """The statement's JSON as Python's ``json.dumps`` writes it: markers replaced, every character
    outside printable ASCII escaped (by the ASCII codec's error handler, a run of them at a time)."""
    if "\x01" in text:
        text = _MARKER.sub(_replace, text)
    if "\x7f" in text:  # ASCII, but escaped by json.dumps; raw, it can only be inside a string
        text = text.replace("\x7f", "\\u007f")
    return text.encode("ascii", _ESCAPES)
