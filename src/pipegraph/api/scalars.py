"""``Money``: an exact decimal amount, a string in JSON ("1250.00").

Parsing accepts any decimal; the rules (not negative, at most 2 decimals) are checked by the services so
a breach comes back as a ``userError`` on the input field rather than a request-level error.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, NewType

import strawberry

_CENT = Decimal("0.01")


def _serialize(value: Decimal) -> str:
    return str(value.quantize(_CENT))


def _parse(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError('Money must be a decimal string such as "1250.00"')
    try:
        # str() of a float gives its shortest round-tripping form, so 10.1 stays 10.1.
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal amount") from None


Money = NewType("Money", Decimal)

MONEY_SCALAR = strawberry.scalar(
    name="Money",
    description='An exact amount in the pipeline currency, as a decimal string ("1250.00").',
    serialize=_serialize,
    parse_value=_parse,
)
# For StrawberryConfig(scalar_map=...).
SCALAR_MAP: dict[object, Any] = {Money: MONEY_SCALAR}
