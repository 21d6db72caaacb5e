"""Ensure the request's customer exists in Stripe exactly once, with the request's details.

One business customer id → exactly one Stripe customer, always:
- the create is keyed by our customer id alone and carries nothing but that id
  (in metadata) and, in test mode, the configured test clock, so every run that
  creates it — concurrent requests with different details, another machine's
  ledger — sends the same key with the same params and gets the same customer back;
- the contact details (email, name) are then set by an update keyed by the
  request, and a later request with new details updates the same customer
  before its invoice is created (audited), instead of the invoice going to the
  old address.

Lookup order before creating: our customer map, then Stripe by email (list is
consistent, Search is not) matching our id in metadata, then Search by
metadata (for a customer whose email changed in Stripe; Search lags, but
anything it misses is younger than Stripe's 24 h key window, where the create
key replays it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import stripe
from sqlalchemy.engine import Engine
from sqlmodel import Session

from invoiceflow import fresh, ledger
from invoiceflow.db.engine import insert_if_absent, reading, transaction
from invoiceflow.db.models import BillingRequestRow, CustomerMap, RecoveryPoint, utcnow
from invoiceflow.request import Customer
from invoiceflow.retry import call_with_retries
from invoiceflow.runtime import Runtime
from invoiceflow.stripe_keys import (
    META_CUSTOMER_ID,
    idempotency_key,
    metadata_of,
    request_step_key,
)
from invoiceflow.stripe_write import ensure_shared, write_once

log = logging.getLogger(__name__)


class CustomerGone(LookupError):
    """The Stripe customer our map points at was deleted (or belongs to another account)."""


def ensure_customer(rt: Runtime, request_id: str, owner: str) -> str:
    """Resolve the request's Stripe customer, bring its details up to date, and
    advance the request to `customer_ready`."""
    row = ledger.require(rt.engine, request_id)
    if row.stripe_customer_id is not None:
        return row.stripe_customer_id
    customer = Customer.model_validate(row.payload["customer"])

    known = mapped(rt.engine, customer.id)
    email: str | None
    name: str | None
    keys: list[str] = []  # the write intents this step closes
    if known is not None:
        stripe_id, email, name = known.stripe_customer_id, known.email, known.name
    else:
        found, create_key = _find_or_create(rt, customer, request_id)
        stripe_id, email, name = found.id, found.email, found.name
        keys.append(create_key)
    if (email, name) != (customer.email, customer.name):
        try:
            keys.append(_update_details(rt, request_id, customer, stripe_id))
        except CustomerGone:
            forget(rt.engine, customer.id, stripe_id)
            return ensure_customer(rt, request_id, owner)
    _commit(rt, request_id, owner, customer, stripe_id, (email, name), keys)
    return stripe_id


def _find_or_create(
    rt: Runtime, customer: Customer, request_id: str
) -> tuple[stripe.Customer, str]:
    params: stripe.params.CustomerCreateParams = {"metadata": {META_CUSTOMER_ID: customer.id}}
    clock = rt.settings.stripe_test_clock
    if clock is not None:
        # Test mode with simulated time: the customer (and so its invoices) lives on the
        # clock. Decided once here, so every attempt under the key sends the same params.
        params["test_clock"] = clock

    def create(key: str) -> stripe.Customer:
        created = rt.stripe.v1.customers.create(params, {"idempotency_key": key})
        fresh.note(created.id, created)
        log.info("Created Stripe customer %s for %s", created.id, customer.id)
        return created

    return ensure_shared(
        rt,
        key=idempotency_key("customer", customer.id),
        step="customer.create",
        request_id=request_id,
        find=lambda: _find(rt, customer),
        create=create,
        what=f"create customer {customer.id}",
    )


def _update_details(rt: Runtime, request_id: str, customer: Customer, stripe_id: str) -> str:
    """Set the request's email and name on the Stripe customer (keyed by request)."""
    params: stripe.params.CustomerUpdateParams = {"email": customer.email, "name": customer.name}

    def update(key: str) -> stripe.Customer:
        try:
            updated = rt.stripe.v1.customers.update(stripe_id, params, {"idempotency_key": key})
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                raise CustomerGone(stripe_id) from exc
            raise
        if getattr(updated, "deleted", False):
            raise CustomerGone(stripe_id)
        return updated

    _updated, key = write_once(
        rt,
        key=request_step_key(request_id, f"customer.update.{stripe_id}"),
        step="customer.update",
        request_id=request_id,
        write=update,
        # Setting the same details twice is harmless: nothing to look up first.
        find=lambda _intent: None,
        what=f"update customer {customer.id}",
    )
    log.info("Customer %s (%s) now has the request's email and name", customer.id, stripe_id)
    return key


@dataclass(frozen=True)
class Known:
    """A request's customer that our map holds with the request's very details."""

    customer: Customer
    stripe_id: str


def known(rt: Runtime, row: BillingRequestRow) -> Known | None:
    """The request's customer, when resolving it needs nothing from Stripe: mapped
    already, with the request's email and name. Its `customer_ready` may then be
    committed together with the next point (`commit_known`)."""
    if row.stripe_customer_id is not None:
        return None
    customer = Customer.model_validate(row.payload["customer"])
    found = mapped(rt.engine, customer.id)
    if found is None or (found.email, found.name) != (customer.email, customer.name):
        return None
    return Known(customer, found.stripe_customer_id)


def commit_known(session: Session, row: BillingRequestRow, known: Known) -> None:
    """`customer_ready` for a `Known` customer, in the caller's transaction (row locked).

    The map is not read again under its lock: `known` read it moments ago, and
    there is nothing to write to it. A mapped customer's id changes only when
    its Stripe customer is gone (`forget`, then a new one mapped); a draft made
    for the id we took then fails as a missing customer, and `create_invoice`
    resolves the customer again (`_replace_customer`), as it does for a
    customer deleted after any read. Its details changed by another request
    meanwhile belong to that request's update, not to this invoice. A first
    mapping never comes here (`known` needs one): that race stays with
    `_record`, under the map row's lock and its UNIQUE key.
    """
    row.stripe_customer_id = known.stripe_id
    ledger.advance(
        session, row, RecoveryPoint.CUSTOMER_READY, "customer ready", customer=known.stripe_id
    )


def _commit(
    rt: Runtime,
    request_id: str,
    owner: str,
    customer: Customer,
    stripe_id: str,
    previous: tuple[str | None, str | None],
    keys: list[str],
) -> None:
    """Map the customer (or refresh its details) and advance the request, in one transaction."""
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        _record(session, row, customer, stripe_id, previous, keys)


def _record(
    session: Session,
    row: BillingRequestRow,
    customer: Customer,
    stripe_id: str,
    previous: tuple[str | None, str | None],
    keys: list[str],
) -> None:
    """The map row is the one truth for our customer id: if another request mapped
    it first, this request takes that mapping.

    The row is read (under its lock) before anything is written, and rewritten
    only when it says something other than the request: every invoice of a
    mapped customer rewriting that one row with the same details made
    concurrent invoices of the customer queue on its lock, for nothing.
    """
    mapping = session.get(CustomerMap, customer.id, with_for_update=True, populate_existing=True)
    if mapping is None:
        now = utcnow()
        insert_if_absent(
            session,
            CustomerMap,
            "customer_key",
            customer_key=customer.id,
            stripe_customer_id=stripe_id,
            email=customer.email,
            name=customer.name,
            created_at=now,
            updated_at=now,
        )
        mapping = session.get(
            CustomerMap, customer.id, with_for_update=True, populate_existing=True
        )
        assert mapping is not None
    details = (customer.email, customer.name)
    if mapping.stripe_customer_id == stripe_id and (mapping.email, mapping.name) != details:
        mapping.email, mapping.name, mapping.updated_at = *details, utcnow()
        session.add(mapping)
    for key in keys:
        ledger.fulfil(session, key, stripe_id)
    row.stripe_customer_id = mapping.stripe_customer_id
    details_changed = previous != details
    ledger.advance(
        session,
        row,
        RecoveryPoint.CUSTOMER_READY,
        "customer ready",
        customer=mapping.stripe_customer_id,
        **(
            {"details_updated": {"from": list(previous), "to": [customer.email, customer.name]}}
            if details_changed
            else {}
        ),
    )


def mapped(engine: Engine, customer_key: str) -> CustomerMap | None:
    with reading(engine) as session:
        return session.get(CustomerMap, customer_key)


def forget(engine: Engine, customer_key: str, stripe_id: str) -> None:
    """Drop a map row that points at a Stripe customer which no longer exists."""
    with transaction(engine) as session:
        known = session.get(CustomerMap, customer_key, with_for_update=True)
        if known is not None and known.stripe_customer_id == stripe_id:
            session.delete(known)
    log.warning(
        "Stripe customer %s of %s no longer exists; resolving it again", stripe_id, customer_key
    )


def _find(rt: Runtime, customer: Customer) -> stripe.Customer | None:
    by_email = call_with_retries(
        lambda: rt.stripe.v1.customers.list({"email": customer.email, "limit": 100}),
        f"find customer {customer.id} by email",
    )
    for candidate in by_email.data:
        if metadata_of(candidate).get(META_CUSTOMER_ID) == customer.id:
            return candidate
    query = f"metadata['{META_CUSTOMER_ID}']:'{customer.id}'"
    by_metadata = call_with_retries(
        lambda: rt.stripe.v1.customers.search({"query": query, "limit": 2}),
        f"search customer {customer.id}",
        search=True,
    )
    return by_metadata.data[0] if by_metadata.data else None
