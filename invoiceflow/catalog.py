"""Ensure the Stripe product and price behind each request line exist, once.

Products and prices are shared by every request that bills the same sku, so
they are keyed by our sku (custom product id) and by a price `lookup_key`
(sku + currency + amount), looked up before anything is created, and created
under an idempotency key derived from those ids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import stripe
from sqlalchemy import select as core_select
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from invoiceflow import ledger
from invoiceflow.db.engine import reading, table_of, transaction
from invoiceflow.db.models import PriceMap, ProductMap, RequestLine
from invoiceflow.request import BillingRequest
from invoiceflow.retry import call_with_retries
from invoiceflow.runtime import Runtime
from invoiceflow.stripe_keys import (
    META_SKU,
    price_lookup_key,
    product_id,
    shared_object_key,
)
from invoiceflow.stripe_write import ensure_shared

log = logging.getLogger(__name__)


def prices_mapped(rt: Runtime, request: BillingRequest) -> bool:
    """Whether our map holds a price for every line of `request`: one read, instead of
    one per sku and price, for the common case of a catalog that exists already."""
    keys = {price_lookup_key(i.sku, request.currency, i.unit_amount) for i in request.items}
    with reading(rt.engine) as session:
        return len(prices_in(session, keys)) == len(keys)


def prices_in(session: Session, keys: Iterable[str]) -> dict[str, str]:
    """Stripe price ids by lookup key, for those of `keys` our map holds: one read."""
    statement = select(PriceMap.lookup_key, PriceMap.stripe_price_id).where(
        col(PriceMap.lookup_key).in_(list(keys))
    )
    return {key: price_id for key, price_id in session.exec(statement).all()}


def pin_prices(session: Session, request_id: str) -> list[RequestLine]:
    """Pin each line of the request to its mapped price, within the caller's
    transaction; the lines as pinned, in order.

    One UPDATE … RETURNING instead of a read of the lines, a read of their
    prices and a write per line. The price comes from the map as this
    transaction sees it, not from `prices_mapped`'s read before: the map may
    have been healed since. A line without a mapped price raises, and the
    caller's transaction rolls the whole statement back.
    """
    lines, prices = table_of(RequestLine), table_of(PriceMap)
    mapped_price = (
        core_select(prices.c.stripe_price_id)
        .where(prices.c.lookup_key == lines.c.price_lookup_key)
        .scalar_subquery()
    )
    statement = (
        update(lines)
        .where(lines.c.request_id == request_id)
        .values(stripe_price_id=mapped_price)
        .returning(*lines.c)
    )
    rows = session.connection().execute(statement).all()
    pinned = sorted((RequestLine(**row._mapping) for row in rows), key=lambda x: x.position)
    for line in pinned:
        if line.stripe_price_id is None:
            raise RuntimeError(f"price for line {line.position} ({line.sku}) is not ready")
    return pinned


def ensure_product(rt: Runtime, sku: str, name: str, request_id: str | None = None) -> str:
    """The Stripe product id for `sku`: from our map, else Stripe, else created."""
    with reading(rt.engine) as session:
        known = session.get(ProductMap, sku)
        if known is not None:
            return known.stripe_product_id

    pid = product_id(sku)
    params: stripe.params.ProductCreateParams = {
        "id": pid,
        "name": name,
        "metadata": {META_SKU: sku},
    }
    key = shared_object_key("product", sku, dict(params))

    def create(idempotency_key: str) -> stripe.Product:
        created = rt.stripe.v1.products.create(params, {"idempotency_key": idempotency_key})
        log.info("Created Stripe product %s for sku %s", created.id, sku)
        return created

    product, key = ensure_shared(
        rt,
        key=key,
        step="product.create",
        request_id=request_id,
        find=lambda: _retrieve_product(rt, pid),
        create=create,
        what=f"create product {pid}",
    )
    _remember(
        rt, ProductMap(sku=sku, stripe_product_id=product.id, name=product.name), key, product.id
    )
    return product.id


def _retrieve_product(rt: Runtime, pid: str) -> stripe.Product | None:
    try:
        return call_with_retries(lambda: rt.stripe.v1.products.retrieve(pid), f"get product {pid}")
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return None
        raise


def ensure_price(
    rt: Runtime,
    sku: str,
    currency: str,
    unit_amount: int,
    stripe_product_id: str,
    request_id: str | None = None,
) -> str:
    """The Stripe price id for (sku, currency, amount): our map, else lookup key, else created."""
    lookup_key = price_lookup_key(sku, currency, unit_amount)
    with reading(rt.engine) as session:
        known = session.get(PriceMap, lookup_key)
        if known is not None:
            return known.stripe_price_id

    params: stripe.params.PriceCreateParams = {
        "product": stripe_product_id,
        "currency": currency,
        "unit_amount": unit_amount,
        "lookup_key": lookup_key,
        "metadata": {META_SKU: sku},
    }
    key = shared_object_key("price", lookup_key, dict(params))

    def create(idempotency_key: str) -> stripe.Price:
        created = rt.stripe.v1.prices.create(params, {"idempotency_key": idempotency_key})
        log.info("Created Stripe price %s for %s", created.id, lookup_key)
        return created

    price, key = ensure_shared(
        rt,
        key=key,
        step="price.create",
        request_id=request_id,
        find=lambda: _find_price(rt, lookup_key),
        create=create,
        what=f"create price {lookup_key}",
    )
    row = PriceMap(
        lookup_key=lookup_key,
        stripe_price_id=price.id,
        sku=sku,
        currency=currency,
        unit_amount=unit_amount,
    )
    _remember(rt, row, key, price.id)
    return price.id


class ArchivedPrice(RuntimeError):
    """Our price for a sku and amount exists but someone archived it in Stripe.

    An archived price keeps its lookup key, so we cannot create a new one under
    it without taking the key away (`transfer_lookup_key`) — which would quietly
    overrule a deliberate decision in the Dashboard. The user decides instead.
    """


def _find_price(rt: Runtime, lookup_key: str) -> stripe.Price | None:
    found = call_with_retries(
        lambda: rt.stripe.v1.prices.list({"lookup_keys": [lookup_key], "limit": 1}),
        f"find price {lookup_key}",
    )
    if not found.data:
        return None
    price = found.data[0]
    if not price.active:
        raise ArchivedPrice(
            f"price {price.id} ({lookup_key}) is archived in Stripe; reactivate it in the "
            "Dashboard to bill this sku at this amount again, or bill a different amount"
        )
    return price


def _remember(rt: Runtime, row: ProductMap | PriceMap, key: str, stripe_id: str) -> None:
    """Store the map row and close the write intent together; a concurrent run
    that stored the same mapping first wins harmlessly (same Stripe object)."""
    try:
        with transaction(rt.engine) as session:
            session.add(row)
            ledger.fulfil(session, key, stripe_id)
    except IntegrityError:
        pass


def heal_prices(rt: Runtime, request_id: str, owner: str, lines: list[RequestLine]) -> bool:
    """Re-verify the Stripe prices behind `lines` after Stripe refused one; repoint
    the lines whose price is gone. True when any line now has another price.

    Our maps are a cache: a price deleted, or a map carried over from another
    account or mode, is looked up again by its lookup key (and its product by
    our product id), and created anew where Stripe has none. An archived price
    still owns its lookup key, so `ensure_price` refuses it with what to do.
    """
    currency = ledger.require(rt.engine, request_id).currency
    repointed: dict[str, str] = {}
    for line in lines:
        if line.price_lookup_key in repointed or _price_is_good(rt, line):
            continue
        _forget(rt, PriceMap, line.price_lookup_key)
        product = _product_that_exists(rt, line.sku, line.name, request_id)
        repointed[line.price_lookup_key] = ensure_price(
            rt, line.sku, currency, line.unit_amount, product, request_id
        )
    before = {line.price_lookup_key: line.stripe_price_id for line in lines}
    changed = {key: new for key, new in repointed.items() if before[key] != new}
    if changed:
        with ledger.locked(rt.engine, request_id, owner) as (session, row):
            for line in ledger.lines_in(session, request_id):
                if line.price_lookup_key in changed:
                    line.stripe_price_id = changed[line.price_lookup_key]
                    session.add(line)
            ledger.note(session, row, "prices re-resolved in Stripe", prices=changed)
    return bool(changed)


def _price_is_good(rt: Runtime, line: RequestLine) -> bool:
    assert line.stripe_price_id is not None
    price_id = line.stripe_price_id
    try:
        price = call_with_retries(
            lambda: rt.stripe.v1.prices.retrieve(price_id), f"get price {price_id}"
        )
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return False
        raise
    return bool(price.active) and price.unit_amount == line.unit_amount


def _product_that_exists(rt: Runtime, sku: str, name: str, request_id: str) -> str:
    mapped = ensure_product(rt, sku, name, request_id)
    if _retrieve_product(rt, mapped) is not None:
        return mapped
    _forget(rt, ProductMap, sku)
    return ensure_product(rt, sku, name, request_id)


def _forget(rt: Runtime, model: type[ProductMap] | type[PriceMap], key: str) -> None:
    with transaction(rt.engine) as session:
        stale = session.get(model, key, with_for_update=True)
        if stale is not None:
            session.delete(stale)
    log.warning("Forgot %s %s: Stripe no longer has it", model.__tablename__, key)
