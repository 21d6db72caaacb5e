"""The soak's billing requests, generated from its seed.

Every request is decided here, once: its customer and currency (0, 2 and 3
decimals), its lines (mostly 1-5, a few large, one of 250 in a soak of 100 or
more), the triggers that submit it (a second one, concurrently, for some), whether
it comes back later with changed content, and its fate once sent (pay, decline,
void or leave open). Items are always integer `unit_amount` + `quantity`, so the
verifier needs no parsing of ours to know the expected amounts.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

# (customer id, name, currency): a customer bills in one currency, as most do.
CUSTOMERS = [
    ("soak-acme", "Acme Corp", "usd"),
    ("soak-initech", "Initech GmbH", "usd"),
    ("soak-kaiju", "Kaiju KK", "jpy"),
    ("soak-tokyo", "Tokyo Trading", "jpy"),
    ("soak-gulf", "Gulf Logistics", "kwd"),
    ("soak-kuwait", "Kuwait Cargo", "kwd"),
]
SKUS = [
    ("consulting-hour", "Consulting hour"),
    ("support-plan", "Support plan"),
    ("seat-licence", "Seat licence"),
    ("hosting", "Managed hosting"),
    ("training-day", "Training day"),
]
# Unit amounts in minor units, well above every minimum charge, few enough that
# prices (sku + currency + amount) are shared between requests.
AMOUNTS = {"usd": [1_500, 9_900, 25_000], "jpy": [1_200, 9_800, 30_000], "kwd": [5_000, 12_500]}
TRIGGERS = ("batch", "cli", "http")
FATES = ("pay", "decline", "void", "leave")
FATE_WEIGHTS = (4, 2, 2, 2)
BIG_LINES = 250


def generate(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` requests, the same ones for the same seed."""
    rng = random.Random(seed)
    requests = [_request(rng, seed, n) for n in range(count)]
    if count >= 100:  # the full soak carries Stripe's per-invoice maximum at least once
        big = requests[rng.randrange(count)]
        big["items"] = _items(rng, big["currency"], BIG_LINES)
    return requests


def _request(rng: random.Random, seed: int, n: int) -> dict[str, Any]:
    customer_id, name, currency = rng.choice(CUSTOMERS)
    roll = rng.random()
    lines = rng.randint(1, 5) if roll < 0.9 else rng.randint(20, 120)
    first = rng.choice(TRIGGERS)
    triggers = [first]
    if rng.random() < 0.12:  # submitted twice at once, through another trigger
        triggers.append(rng.choice([t for t in TRIGGERS if t != first]))
    return {
        "request_id": f"soak-{seed}-{n:04d}",
        "customer": {"id": customer_id, "email": f"billing@{customer_id}.example", "name": name},
        "currency": currency,
        "days_until_due": 30,
        "description": f"Chaos soak {seed}, request {n}",
        "items": _items(rng, currency, lines),
        "_soak": {
            "triggers": triggers,
            "changed_later": rng.random() < 0.08,
            "fate": rng.choices(FATES, FATE_WEIGHTS)[0],
        },
    }


def _items(rng: random.Random, currency: str, lines: int) -> list[dict[str, Any]]:
    items = []
    for n in range(lines):
        sku, name = SKUS[n % len(SKUS)] if lines > len(SKUS) else rng.choice(SKUS)
        item = {
            "sku": sku,
            "name": name,  # one sku, one name within a request
            "unit_amount": rng.choice(AMOUNTS[currency]),
            "quantity": rng.randint(1, 3),
        }
        if lines > len(SKUS):  # usage lines, e.g. one per site and service
            item["description"] = f"Site {n // len(SKUS) + 1}"
        items.append(item)
    return items


def submitted(request: dict[str, Any]) -> dict[str, Any]:
    """The document a trigger submits: the request without the harness's `_soak` notes."""
    return {key: value for key, value in request.items() if key != "_soak"}


def changed(request: dict[str, Any]) -> dict[str, Any]:
    """The same request_id with other content: one more of its first line."""
    other = copy.deepcopy(submitted(request))
    other["items"][0]["quantity"] += 1
    return other


def write(path: Path, requests: list[dict[str, Any]]) -> None:
    with path.open("w") as out:
        for request in requests:
            out.write(json.dumps(request) + "\n")
