"""Refusing the NUL character in every text a request sends.

PostgreSQL cannot store U+0000 in text (the statement fails) and SQLite stores it and then cuts
patterns at it, so a NUL anywhere in a variable or a string literal is refused before anything runs,
with ``INVALID`` and the path of the value, on every operation type and transport.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError, StringValueNode, Visitor, visit
from strawberry.extensions import SchemaExtension

NUL = "\x00"
MESSAGE = "must not contain the NUL character (U+0000)"


def nul_path(value: object, path: str) -> str | None:
    """The path of the first text (or key) holding a NUL in a JSON-like value, or None."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            item_path = f"{path}.{key}"
            if NUL in str(key):
                return item_path
            if (found := nul_path(item, item_path)) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := nul_path(item, f"{path}[{index}]")) is not None:
                return found
    return None


class _Literals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found = False

    def enter_string_value(self, node: StringValueNode, *_: object) -> object:
        if NUL in node.value:
            self.found = True
            return self.BREAK
        return None


class RefuseNul(SchemaExtension):
    def on_parse(self) -> Iterator[None]:
        yield
        context = self.execution_context
        variables = context.variables or {}
        for name, value in variables.items():
            if (path := nul_path(value, f"${name}")) is not None:
                raise GraphQLError(f"{path} {MESSAGE}", extensions={"code": "INVALID", "field": path})
        document = context.graphql_document
        # A literal holds a NUL only through the character itself or a \u escape: most documents
        # need no walk.
        query = context.query or ""
        if document is not None and (NUL in query or "\\u" in query):
            literals = _Literals()
            visit(document, literals)
            if literals.found:
                raise GraphQLError(f"a string literal {MESSAGE}", extensions={"code": "INVALID"})
