"""Query cost, worked out before execution (GitHub's and Shopify's public APIs are the models).

- An object costs 1; scalars and enums cost nothing.
- A connection (a field with ``first``/``last`` returning ``edges``/``nodes``) costs
  ``2 + size × item cost``, where ``size`` is the page size asked for (clamped to the largest page the
  server returns) and an item is what is selected in ``edges`` or ``nodes``:
  ``leads(first: 50) { edges { node { title stage { name } } } }`` costs 2 + 50 × (1 + 1 + 1) = 152.
  Other fields with a page size (``activities(first: 5)``) cost ``size × item cost``.
- A list without a page size (a pipeline's stages, the users) is counted as one item: its length is set
  by the data, not by the client. The actual cost, counted on the result, charges what it really held.
- A mutation field costs ``MUTATION_COST`` more: writes are dearer than reads.

A document is compiled once per (document, operation) into a small tree and cached; per request the
requested cost only reads the page sizes given as variables, and the actual cost counts the items of
the lists in the result (a subtree without lists is charged as requested, without walking it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NamedTypeNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef

from pipegraph.services.queries import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

OBJECT_COST = 1
CONNECTION_COST = 2  # the connection and its page info
MUTATION_COST = 10
PAGE_ARGUMENTS = ("first", "last")
CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class PageSize:
    """Where a field's page size comes from: a literal, a variable, or the schema's default."""

    literal: int | None
    variable: str | None
    default: int

    def resolve(self, variables: Mapping[str, Any] | None) -> int:
        value: object = self.literal
        if self.variable is not None:
            value = (variables or {}).get(self.variable, self.default)
        if not isinstance(value, int) or isinstance(value, bool):
            value = self.default  # a wrong type fails coercion later, with the client's own message
        return max(0, min(value, MAX_PAGE_SIZE))


@dataclass(frozen=True, slots=True)
class CostNode:
    """One object-valued field of the document, with its selected object-valued subfields."""

    key: str  # the response key: the alias, else the field name
    extra: int  # MUTATION_COST for a mutation field, else 0
    page: tuple[PageSize, ...]  # empty when the field has no page size
    connection: bool
    is_list: bool
    nested_list: bool  # a list of lists
    children: tuple[CostNode, ...]
    # The cost of one value (or list item) when nothing below it is a list: counted without a walk.
    fixed: int | None

    def requested(self, variables: Mapping[str, Any] | None) -> int:
        inner = sum(child.requested(variables) for child in self.children)
        if self.connection:
            return self.extra + CONNECTION_COST + self._size(variables) * inner
        one = self.fixed if self.fixed is not None else OBJECT_COST + inner
        return self.extra + (self._size(variables) * one if self.page else one)

    def actual(self, value: Any) -> int:
        if value is None:
            return 0
        if self.connection:
            if not isinstance(value, dict):
                return 0
            return (
                self.extra
                + CONNECTION_COST
                + sum(child.actual(value.get(child.key)) for child in self.children)
            )
        if not self.is_list:
            return self.extra + self._one(value)
        if not isinstance(value, list):
            return 0
        if self.fixed is not None and not self.nested_list:
            # Items of a list of objects are dicts or nulls: counted without a Python-level loop.
            return self.extra + self.fixed * (len(value) - value.count(None))
        items = _flatten(value) if self.nested_list else value
        return self.extra + sum(self._one(item) for item in items)

    def counted(self, values: int) -> int | None:
        """The actual cost from how many values the field held (a list's or a connection's items, 1
        or 0 for an object), as :meth:`actual` counts it; None when that needs the values themselves
        (a list below an item, an object's absence to tell from its presence below a connection)."""
        if self.connection:
            total = self.extra + CONNECTION_COST
            for child in self.children:  # edges or nodes: the items; pageInfo: always there
                if child.fixed is None or child.nested_list or child.connection:
                    return None
                total += child.extra + child.fixed * (values if child.is_list else 1)
            return total
        if self.fixed is None or self.nested_list:
            return None
        if self.is_list:
            return self.extra + self.fixed * values
        return self.extra + self.fixed if values else 0

    def _one(self, value: Any) -> int:
        if not isinstance(value, dict):
            return 0
        if self.fixed is not None:
            return self.fixed
        return OBJECT_COST + sum(child.actual(value.get(child.key)) for child in self.children)

    def _size(self, variables: Mapping[str, Any] | None) -> int:
        return max(page.resolve(variables) for page in self.page)


@dataclass(frozen=True, slots=True)
class CostPlan:
    roots: tuple[CostNode, ...]
    # The requested cost when no page size comes from a variable.
    constant: int | None

    def requested(self, variables: Mapping[str, Any] | None) -> int:
        if self.constant is not None:
            return self.constant
        return sum(root.requested(variables) for root in self.roots)

    def actual(self, data: Mapping[str, Any] | None) -> int:
        if data is None:
            return 0
        return sum(root.actual(data.get(root.key)) for root in self.roots)


def _flatten(value: Any) -> Iterable[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


class CostAnalyzer:
    """Compiles and caches a :class:`CostPlan` per (query text, operation name); one per schema."""

    def __init__(self, *, cache_size: int = CACHE_SIZE) -> None:
        self._cache: OrderedDict[tuple[str, str | None], CostPlan] = OrderedDict()
        self._cache_size = cache_size

    def plan(
        self, schema: GraphQLSchema, document: DocumentNode, query: str | None, operation_name: str | None
    ) -> CostPlan:
        key = (query or "", operation_name)
        plan = self._cache.get(key)
        if plan is not None:
            self._cache.move_to_end(key)
            return plan
        plan = _Compiler(schema, document).compile(operation_name)
        self._cache[key] = plan
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return plan


class _Compiler:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode) -> None:
        self._schema = schema
        self._fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self._operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        self._variable_defaults: dict[str, Any] = {}

    def compile(self, operation_name: str | None) -> CostPlan:
        operation = next(
            (
                op
                for op in self._operations
                if operation_name is None or (op.name is not None and op.name.value == operation_name)
            ),
            None,
        )
        if operation is None:
            return CostPlan((), 0)
        for definition in operation.variable_definitions or ():
            if isinstance(definition.default_value, IntValueNode):
                self._variable_defaults[definition.variable.name.value] = int(definition.default_value.value)
        root_type = self._schema.get_root_type(operation.operation)
        if root_type is None:
            return CostPlan((), 0)
        extra = MUTATION_COST if operation.operation is OperationType.MUTATION else 0
        roots = self._nodes(root_type, [operation.selection_set], extra, root=True)
        constant = (
            None
            if any(_depends_on_variables(node) for node in roots)
            else sum(node.requested(None) for node in roots)
        )
        return CostPlan(roots, constant)

    def _nodes(
        self, parent: GraphQLObjectType, selection_sets: list[SelectionSetNode], extra: int, *, root: bool
    ) -> tuple[CostNode, ...]:
        grouped: dict[str, list[tuple[GraphQLObjectType, FieldNode]]] = {}
        for owner, field in self._collect(parent, selection_sets, set()):
            grouped.setdefault(field.alias.value if field.alias else field.name.value, []).append(
                (owner, field)
            )
        nodes = []
        for key, fields in grouped.items():
            owner, first = fields[0]
            definition = self._field(owner, first.name.value, root=root)
            if definition is None:
                continue
            named = get_named_type(definition.type)
            if is_leaf_type(named) or not hasattr(named, "fields"):
                continue
            subsets = [f.selection_set for _, f in fields if f.selection_set is not None]
            nodes.append(self._node(key, definition, first, named, subsets, extra if root else 0))
        return tuple(nodes)

    def _node(
        self,
        key: str,
        definition: GraphQLField,
        field: FieldNode,
        named: Any,
        subsets: list[SelectionSetNode],
        extra: int,
    ) -> CostNode:
        page = self._page(definition, field)
        depth = _list_depth(definition.type)
        connection = bool(page) and depth == 0 and ("edges" in named.fields or "nodes" in named.fields)
        children = self._nodes(named, subsets, 0, root=False)
        if connection:
            # Only the item lists scale with the page; the connection's own objects are in its 2.
            children = tuple(child for child in children if child.is_list)
        fixed = None
        if not connection and all(
            child.fixed is not None and not child.is_list and not child.connection for child in children
        ):
            fixed = OBJECT_COST + sum(child.fixed or 0 for child in children)
        return CostNode(key, extra, page, connection, depth > 0, depth > 1, children, fixed)

    def _page(self, definition: GraphQLField, field: FieldNode) -> tuple[PageSize, ...]:
        names = [name for name in PAGE_ARGUMENTS if name in definition.args]
        if not names:
            return ()
        given = {a.name.value: a.value for a in field.arguments or () if a.name.value in names}
        sizes = []
        for name, value in given.items():
            if isinstance(value, IntValueNode):
                sizes.append(PageSize(int(value.value), None, DEFAULT_PAGE_SIZE))
            elif isinstance(value, VariableNode):
                variable = value.name.value
                default = self._variable_defaults.get(variable, _schema_default(definition, name))
                sizes.append(PageSize(None, variable, default))
        if not sizes:
            default = _schema_default(definition, names[0])
            sizes.append(PageSize(default, None, default))
        return tuple(sizes)

    def _collect(
        self, parent: GraphQLObjectType, selection_sets: list[SelectionSetNode], seen: set[str]
    ) -> Iterable[tuple[GraphQLObjectType, FieldNode]]:
        for selection_set in selection_sets:
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    yield parent, selection
                    continue
                if isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = self._fragments.get(name)
                    if fragment is None or name in seen:  # validation has refused cycles already
                        continue
                    condition: NamedTypeNode | None = fragment.type_condition
                    subset, seen = fragment.selection_set, seen | {name}
                elif isinstance(selection, InlineFragmentNode):
                    condition, subset = selection.type_condition, selection.selection_set
                else:
                    continue
                owner = parent
                if condition is not None:
                    named = self._schema.get_type(condition.name.value)
                    # On an abstract type every possible fragment is counted: an upper bound.
                    owner = named if isinstance(named, GraphQLObjectType) else parent
                yield from self._collect(owner, [subset], seen)

    def _field(self, owner: Any, name: str, *, root: bool) -> GraphQLField | None:
        if root and name == "__schema":
            return SchemaMetaFieldDef
        if root and name == "__type":
            return TypeMetaFieldDef
        fields = getattr(owner, "fields", {})
        field: GraphQLField | None = fields.get(name)
        return field


def _schema_default(definition: GraphQLField, argument: str) -> int:
    default = definition.args[argument].default_value
    return default if isinstance(default, int) and not isinstance(default, bool) else DEFAULT_PAGE_SIZE


def _list_depth(type_: Any) -> int:
    depth = 0
    while True:
        if is_non_null_type(type_):
            type_ = type_.of_type
        elif is_list_type(type_):
            depth, type_ = depth + 1, type_.of_type
        else:
            return depth


def _depends_on_variables(node: CostNode) -> bool:
    return any(page.variable is not None for page in node.page) or any(
        _depends_on_variables(child) for child in node.children
    )
