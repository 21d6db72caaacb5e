"""Ensure the request's customer exists in Stripe exactly once.

Lookup order: our customer map (authoritative for ids we created), then Stripe
by email — list is consistent, Search is not — matching our id in metadata,
then Search by metadata for a customer whose email changed in Stripe, and only
then create, under a key derived from our customer id.
"""

from __future__ import annotations

import logging

import stripe
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from invoiceflow import ledger
from invoiceflow.db.models import CustomerMap, RecoveryPoint
from invoiceflow.request import Customer
from invoiceflow.retry import call_with_retries
from invoiceflow.runtime import Runtime
from invoiceflow.stripe_keys import META_CUSTOMER_ID, metadata_of, shared_object_key
from invoiceflow.stripe_write import ensure_shared

log = logging.getLogger(__name__)


def ensure_customer(rt: Runtime, request_id: str, owner: str) -> str:
    """Resolve the request's Stripe customer and advance the request to `customer_ready`."""
    row = ledger.require(rt.engine, request_id)
    if row.stripe_customer_id is not None:
        return row.stripe_customer_id
    customer = Customer.model_validate(row.payload["customer"])

    key = shared_object_key(
        "customer", customer.id, {"email": customer.email, "name": customer.name}
    )
    params: stripe.params.CustomerCreateParams = {
        "email": customer.email,
        "name": customer.name,
        "metadata": {META_CUSTOMER_ID: customer.id},
    }

    def create(idempotency_key: str) -> str:
        created = rt.stripe.v1.customers.create(params, {"idempotency_key": idempotency_key})
        log.info("Created Stripe customer %s for %s", created.id, customer.id)
        return created.id

    stripe_id, key = ensure_shared(
        rt,
        key=key,
        step="customer.create",
        request_id=request_id,
        find=lambda: _mapped(rt, customer.id) or _find(rt, customer),
        create=create,
        what=f"create customer {customer.id}",
    )

    try:
        _commit(rt, request_id, owner, customer, stripe_id, key)
    except IntegrityError:
        # A concurrent request mapped this customer first; both saw the same
        # Stripe customer (same key, same params), so take the stored mapping.
        stripe_id = _mapped(rt, customer.id) or stripe_id
        _commit(rt, request_id, owner, customer, stripe_id, key, map_customer=False)
    return stripe_id


def _commit(
    rt: Runtime,
    request_id: str,
    owner: str,
    customer: Customer,
    stripe_id: str,
    key: str,
    map_customer: bool = True,
) -> None:
    with ledger.locked(rt.engine, request_id, owner) as (session, row):
        if map_customer and session.get(CustomerMap, customer.id) is None:
            session.add(
                CustomerMap(
                    customer_key=customer.id, stripe_customer_id=stripe_id, email=customer.email
                )
            )
            ledger.fulfil(session, key, stripe_id)
        row.stripe_customer_id = stripe_id
        ledger.advance(
            session, row, RecoveryPoint.CUSTOMER_READY, "customer ready", customer=stripe_id
        )


def _mapped(rt: Runtime, customer_key: str) -> str | None:
    with Session(rt.engine) as session:
        known = session.get(CustomerMap, customer_key)
        return known.stripe_customer_id if known else None


def _find(rt: Runtime, customer: Customer) -> str | None:
    by_email = call_with_retries(
        lambda: rt.stripe.v1.customers.list({"email": customer.email, "limit": 100}),
        f"find customer {customer.id} by email",
    )
    for candidate in by_email.data:
        if metadata_of(candidate).get(META_CUSTOMER_ID) == customer.id:
            return candidate.id
    query = f"metadata['{META_CUSTOMER_ID}']:'{customer.id}'"
    by_metadata = call_with_retries(
        lambda: rt.stripe.v1.customers.search({"query": query, "limit": 2}),
        f"search customer {customer.id}",
    )
    return by_metadata.data[0].id if by_metadata.data else None
