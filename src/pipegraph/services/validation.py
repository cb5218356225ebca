"""Small input checks shared by the services; each raises ``ValidationError`` naming the field."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from pipegraph.errors import ValidationError

# Deliberately permissive (one @, a dotted domain or localhost, no spaces): catches typos, not RFC 5322.
EMAIL = re.compile(r"^[^@\s]+@([^@\s]+\.[^@\s]+|localhost)$")


def clean_text(value: str, *, field: str, max_length: int, required: bool = False) -> str:
    cleaned = value.strip()
    if required and not cleaned:
        raise ValidationError(f"{field} must not be empty", field=field)
    if len(cleaned) > max_length:
        raise ValidationError(f"{field} is longer than {max_length} characters", field=field)
    return cleaned


def clean_email(value: str, *, field: str, required: bool = False) -> str:
    cleaned = value.strip()
    if not cleaned and not required:
        return ""
    if len(cleaned) > 320 or not EMAIL.match(cleaned):
        raise ValidationError(f"{value!r} is not a valid email address", field=field)
    return cleaned


def to_cents(value: Decimal | int | str, *, field: str) -> int:
    """Money in major units (exact decimal, ≥ 0, at most 2 decimals) to whole cents."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationError(f"{value!r} is not a decimal amount", field=field) from None
    if not amount.is_finite():
        raise ValidationError(f"{value!r} is not a finite amount", field=field)
    if amount < 0:
        raise ValidationError(f"{field} must not be negative, got {amount}", field=field)
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValidationError(f"{field} has more than 2 decimal places: {amount}", field=field)
    result = int(cents)
    if result >= 2**63:
        raise ValidationError(f"{field} is too large", field=field)
    return result


def from_cents(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def check_probability(value: float | None, *, field: str) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValidationError(f"{field} must be between 0 and 1, got {value}", field=field)
    return value


def check_non_negative(value: int | None, *, field: str) -> int | None:
    if value is not None and value < 0:
        raise ValidationError(f"{field} must not be negative, got {value}", field=field)
    return value
