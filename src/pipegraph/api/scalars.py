"""``Money``: an exact decimal amount, a string in JSON ("1250.00").

Parsing accepts any decimal; the rules (not negative, at most 2 decimals) are checked by the services so
a breach comes back as a ``userError`` on the input field rather than a request-level error.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, NewType

import strawberry
from graphql import GraphQLError

_CENT = Decimal("0.01")


def _serialize(value: Decimal) -> str:
    return str(value.quantize(_CENT))


def _parse(value: object) -> Decimal:
    # A GraphQLError, not a ValueError: graphql-core reports it as the client's mistake, where any
    # other exception would count as a server bug and be masked.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise GraphQLError('Money must be a decimal string such as "1250.00"')
    try:
        # str() of a float gives its shortest round-tripping form, so 10.1 stays 10.1.
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise GraphQLError(f"{value!r} is not a decimal amount") from None


Money = NewType("Money", Decimal)

MONEY_SCALAR = strawberry.scalar(
    name="Money",
    description='An exact amount in the pipeline currency, as a decimal string ("1250.00").',
    serialize=_serialize,
    parse_value=_parse,
)
# For StrawberryConfig(scalar_map=...).
SCALAR_MAP: dict[object, Any] = {Money: MONEY_SCALAR}
