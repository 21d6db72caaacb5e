"""Test clocks: /v1/test_helpers/test_clocks, Stripe's simulated time for test mode.

A customer created with `test_clock=clock_…` lives on that clock, and so does everything
of it: its invoices and invoice items carry the clock's id in `test_clock`, and every
timestamp the sandbox stamps on them (`created`, `due_date`, `status_transitions.*`,
`effective_at`, payments) is the clock's `frozen_time`, not the wall clock
(`Store.clock_time`).

Events follow the same rule: an event about an object on a clock (or about the clock
itself) has the clock's time as `created`, so `created[gte]=<an invoice timestamp>`
finds the invoice's events whatever the wall clock says. Events raised while a clock
advances are stamped with the moment they fall due inside the advance (a due date
crossed on day 3 of a 10-day advance gets day 3), and go out in time order.

Advancing answers `status: advancing` at once and turns `ready` after
`SandboxConfig.test_clock_advance_ms` (clients poll retrieve, as with Stripe). On the
way, every open invoice of the clock's customers whose moment is crossed raises
`invoice.will_be_due` (`invoice_will_be_due_days` before its due date) and
`invoice.overdue` (`invoice_overdue_days` after it), and every bank debit of theirs
`bank_debit_days` old gets its outcome (`bank_debits.py`); each moment is crossed at most
once, since a clock only moves forward.

Stripe caps one advance at two intervals of the clock's shortest subscription, or two
years when it has none; the sandbox has no subscriptions, so the cap is two calendar
years past the current frozen time. Stripe deletes a clock 30 days after creating it
(`deletes_after`); the sandbox reports that date but does not act on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

from stripe_sandbox import shapes
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.context import Call, changed, record_event
from stripe_sandbox.errors import invalid
from stripe_sandbox.listing import paginate
from stripe_sandbox.params import LIST_PAGING, Int, Str
from stripe_sandbox.resources import bank_debits, customers
from stripe_sandbox.resources.common import Route, read
from stripe_sandbox.store import JSON, Store, now

SECONDS_PER_DAY = 86_400
# Stripe deletes a test clock this long after its creation.
LIFETIME_DAYS = 30
# Without subscriptions, one advance may move a clock at most this many years.
MAX_ADVANCE_YEARS = 2

# A crossing that is a bank debit's outcome rather than an invoice event.
_SETTLE = "bank_debit.settle"

_CREATE = {"frozen_time": Int(required=True), "name": Str(), "customer": Str()}
_ADVANCE = {"frozen_time": Int(required=True)}


def create(call: Call) -> JSON:
    params = read(call, _CREATE)
    store = call.store
    attach = None
    if params.get("customer"):
        attach = store.get("cus", params["customer"], param="customer")
        if attach["test_clock"] is not None:
            raise invalid(
                f"Customer {attach['id']} is already attached to test clock "
                f"{attach['test_clock']}; a customer can't move to another clock.",
                param="customer",
            )
    created = now()
    clock = _clock(store.new_id("clock"), created, params["frozen_time"], params.get("name"))
    store.test_clocks[clock["id"]] = clock
    call.emit("test_helpers.test_clock.created", clock)
    if attach is not None:
        before = dict(attach)
        attach["test_clock"] = clock["id"]
        call.emit("customer.updated", attach, changed(before, attach))
    return clock


def retrieve(call: Call, id: str) -> JSON:
    read(call, {})
    return call.store.get("clock", id)


def list_(call: Call) -> JSON:
    params = read(call, LIST_PAGING)
    return paginate(call.store.newest_first("clock"), params, "/v1/test_helpers/test_clocks")


def delete(call: Call, id: str) -> JSON:
    """Delete the clock and, as Stripe does, every customer on it."""
    read(call, {})
    store = call.store
    clock = store.get("clock", id)
    for customer in [c for c in store.customers.values() if c["test_clock"] == id]:
        customers.remove(call, customer)  # while the clock exists: stamped on its time
    del store.test_clocks[id]
    call.emit("test_helpers.test_clock.deleted", clock)
    return shapes.deleted(id, clock["object"])


def advance(call: Call, id: str) -> JSON:
    params = read(call, _ADVANCE)
    store = call.store
    clock = store.get("clock", id)
    if clock["status"] != "ready":
        raise invalid(
            f"Test clock {id} is {clock['status']}; wait until its status is `ready` before "
            "advancing it again."
        )
    target: int = params["frozen_time"]
    current: int = clock["frozen_time"]
    if target <= current:
        raise invalid(
            f"The frozen_time must be after the test clock's current frozen_time ({current}); "
            f"got {target}.",
            param="frozen_time",
        )
    limit = _years_later(current, MAX_ADVANCE_YEARS)
    if target > limit:
        raise invalid(
            f"A test clock without subscriptions can advance at most {MAX_ADVANCE_YEARS} years "
            f"at a time: frozen_time must be at most {limit}; advance in several steps.",
            param="frozen_time",
        )
    clock["status"] = "advancing"
    clock["status_details"] = {"advancing": {"target_frozen_time": target}}
    call.emit("test_helpers.test_clock.advancing", clock)
    asyncio.get_running_loop().call_later(
        call.config.test_clock_advance_ms / 1000, _finish, store, call.config, clock, target
    )
    return clock


def _finish(store: Store, config: SandboxConfig, clock: JSON, target: int) -> None:
    """Move the clock to `target` through each moment it crosses, raising that moment's
    invoice events and settling its bank debits in time order, then `ready`."""
    if store.test_clocks.get(clock["id"]) is not clock or clock["status"] != "advancing":
        return  # deleted, or the sandbox was reset, while it advanced
    start = clock["frozen_time"]
    moments: list[tuple[int, str, str]] = [
        (moment, type_, invoice["id"])
        for moment, type_, invoice in _crossed(store, config, clock["id"], start, target)
    ]
    moments += [
        (moment, _SETTLE, intent_id)
        for moment, intent_id in bank_debits.due_on_clock(store, clock["id"], start, target)
    ]
    # Stable sort: the same moment keeps invoice order, reminders before settlements.
    for moment, type_, subject in sorted(moments, key=lambda crossing: crossing[0]):
        clock["frozen_time"] = moment  # what happens at a moment is stamped with it
        if type_ == _SETTLE:
            bank_debits.settle(store, config, subject)
        elif store.invoices[subject]["status"] == "open":  # not paid earlier in the advance
            record_event(store, type_, store.invoices[subject], created=moment)
    clock.update(frozen_time=target, status="ready", status_details={})
    record_event(store, "test_helpers.test_clock.ready", clock)


def _crossed(
    store: Store, config: SandboxConfig, clock_id: str, start: int, end: int
) -> Iterator[tuple[int, str, JSON]]:
    """(moment, event type, invoice) for each invoice moment in (start, end]."""
    for invoice in store.invoices.values():
        due = invoice["due_date"]
        if invoice["test_clock"] != clock_id or invoice["status"] != "open" or due is None:
            continue
        for moment, type_ in (
            (due - config.invoice_will_be_due_days * SECONDS_PER_DAY, "invoice.will_be_due"),
            (due + config.invoice_overdue_days * SECONDS_PER_DAY, "invoice.overdue"),
        ):
            if start < moment <= end:
                yield moment, type_, invoice


def _clock(object_id: str, created: int, frozen_time: int, name: str | None) -> JSON:
    return {
        "id": object_id,
        "object": "test_helpers.test_clock",
        "created": created,
        "deletes_after": created + LIFETIME_DAYS * SECONDS_PER_DAY,
        "frozen_time": frozen_time,
        "livemode": False,
        "name": name,
        "status": "ready",
        "status_details": {},
    }


def _years_later(timestamp: int, years: int) -> int:
    """The same calendar moment `years` later (29 February becomes 28 February)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    try:
        later = moment.replace(year=moment.year + years)
    except ValueError:
        later = moment.replace(year=moment.year + years, day=28)
    return int(later.timestamp())


ROUTES = [
    Route("POST", "/v1/test_helpers/test_clocks", create),
    Route("GET", "/v1/test_helpers/test_clocks", list_),
    Route("GET", "/v1/test_helpers/test_clocks/{id}", retrieve),
    Route("DELETE", "/v1/test_helpers/test_clocks/{id}", delete),
    Route("POST", "/v1/test_helpers/test_clocks/{id}/advance", advance),
]
