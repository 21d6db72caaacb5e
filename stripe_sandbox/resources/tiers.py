"""Tiered prices: Stripe's rules for a tier list and what a quantity costs under it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from stripe_sandbox import shapes
from stripe_sandbox.errors import exclusive, invalid
from stripe_sandbox.store import JSON


def check(tiers: list[dict[str, Any]], param: str) -> None:
    """Bounds strictly increase, only the last is `inf`, each tier prices something."""
    if not tiers:
        raise invalid("A tiered price needs at least one tier.", param=param)
    previous = 0
    for index, tier in enumerate(tiers):
        where = f"{param}[{index}]"
        last = index == len(tiers) - 1
        bound = tier["up_to"]
        if (bound is None) != last:
            raise invalid(
                "Only the last tier must have `up_to=inf`; every other tier needs a bound.",
                param=f"{where}[up_to]",
            )
        if bound is not None and bound <= previous:
            raise invalid("Tier bounds must increase from tier to tier.", param=f"{where}[up_to]")
        previous = bound or previous
        for pair in (
            ("unit_amount", "unit_amount_decimal"),
            ("flat_amount", "flat_amount_decimal"),
        ):
            if all(name in tier for name in pair):
                raise exclusive(list(pair), param=f"{where}[{pair[1]}]")
        if not any(
            name in tier
            for name in ("unit_amount", "unit_amount_decimal", "flat_amount", "flat_amount_decimal")
        ):
            raise invalid(
                "Each tier needs a `unit_amount` or a `flat_amount`.", param=f"{where}[unit_amount]"
            )


def render(tiers: list[dict[str, Any]]) -> list[JSON]:
    """The tiers as Stripe shows them: both integer and decimal forms, nulls where unset."""
    rendered = []
    for tier in tiers:
        unit = _decimal(tier, "unit_amount")
        flat = _decimal(tier, "flat_amount")
        rendered.append(
            {
                "flat_amount": _integer(flat),
                "flat_amount_decimal": None if flat is None else shapes.decimal_string(flat),
                "unit_amount": _integer(unit),
                "unit_amount_decimal": None if unit is None else shapes.decimal_string(unit),
                "up_to": tier["up_to"],
            }
        )
    return rendered


def amount(tiers: list[JSON], mode: str, quantity: int) -> Decimal:
    """What `quantity` units cost: `volume` prices all units at the tier reached,
    `graduated` prices each unit at the tier it falls in (flat fees per tier touched)."""
    total = Decimal(0)
    floor = 0
    for tier in tiers:
        ceiling = tier["up_to"]
        unit = Decimal(tier["unit_amount_decimal"] or 0)
        flat = Decimal(tier["flat_amount_decimal"] or 0)
        if mode == "volume":
            if ceiling is None or quantity <= ceiling:
                return unit * quantity + flat
            continue
        in_tier = (quantity if ceiling is None else min(quantity, ceiling)) - floor
        if in_tier <= 0:
            break
        total += unit * in_tier + flat
        floor = ceiling or floor
    return total


def _decimal(tier: dict[str, Any], name: str) -> Decimal | None:
    if name in tier:
        return Decimal(tier[name])
    if f"{name}_decimal" in tier:
        value: Decimal = tier[f"{name}_decimal"]
        return value
    return None


def _integer(value: Decimal | None) -> int | None:
    if value is None or value != value.to_integral_value():
        return None
    return int(value)
