"""A request's versions in the ledger: what each one said and which invoice it became.

Version 1 is the request as first sent, recorded when it is first amended.
The request's own row always carries the latest version (its content, lines
and invoice), so the invoice steps, the webhook receiver and `status` read it
as before; the version rows are the chain behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from invoiceflow.db.engine import reading
from invoiceflow.db.models import BillingRequestRow, RequestLine, RequestVersion, utcnow
from invoiceflow.request import BillingRequest
from invoiceflow.stripe_keys import price_lookup_key

# A version's own states; the latest one's live state is its request row's.
PLANNED = "planned"  # recorded, its revision not made yet
REVISION_CREATED = "revision_created"  # the draft revision exists, holding the copied lines
COPIES_REMOVED = "copies_removed"  # the copied lines deleted; the invoice steps take over
SENT = "sent"
VOID = "void"  # superseded: Stripe voided it when the next version was finalized
# Never made: the invoice it revised was paid (or voided by hand) while it was a
# draft, so Stripe would not finalize it; the request stays the version before.
DROPPED = "dropped"
IN_PROGRESS = (PLANNED, REVISION_CREATED, COPIES_REMOVED)


@dataclass(frozen=True)
class Link:
    """One version of the chain as `status` and the story show it."""

    version: int
    invoice_id: str | None
    number: str | None
    state: str

    def words(self) -> str:
        invoice = self.invoice_id or "no invoice yet"
        number = f" {self.number}" if self.number else ""
        return f"v{self.version} {invoice}{number} {self.state}"


def chain_in(session: Session, request_id: str) -> list[RequestVersion]:
    statement = (
        select(RequestVersion)
        .where(RequestVersion.request_id == request_id)
        .order_by(col(RequestVersion.version))
    )
    return list(session.exec(statement).all())


def chain(engine: Engine, request_id: str) -> list[RequestVersion]:
    with reading(engine) as session:
        return chain_in(session, request_id)


def links(engine: Engine, row: BillingRequestRow) -> list[Link]:
    """The request's versions, oldest first, the latest with its row's live state;
    empty for a request never amended."""
    with reading(engine) as session:
        found = chain_in(session, row.request_id)
    return [_link(version, row) for version in found]


def links_by_request(engine: Engine, rows: list[BillingRequestRow]) -> dict[str, list[Link]]:
    """`links` of each amended request among `rows`, in one read; the others have none."""
    ids = [row.request_id for row in rows]
    if not ids:
        return {}
    with reading(engine) as session:
        found = session.exec(
            select(RequestVersion)
            .where(col(RequestVersion.request_id).in_(ids))
            .order_by(col(RequestVersion.request_id), col(RequestVersion.version))
        ).all()
    by_id = {row.request_id: row for row in rows}
    chains: dict[str, list[Link]] = {}
    for version in found:
        chains.setdefault(version.request_id, []).append(_link(version, by_id[version.request_id]))
    return chains


def _link(version: RequestVersion, row: BillingRequestRow) -> Link:
    if version.stripe_invoice_id is not None and version.stripe_invoice_id == row.stripe_invoice_id:
        state = "payment pending" if row.payment_pending_since and row.point == SENT else row.point
        return Link(version.version, version.stripe_invoice_id, row.invoice_number, str(state))
    return Link(version.version, version.stripe_invoice_id, version.invoice_number, version.state)


def first_from_row(row: BillingRequestRow) -> RequestVersion:
    """Version 1: the request as it was sent, taken from its row at the first amendment."""
    return RequestVersion(
        request_id=row.request_id,
        version=1,
        fingerprint=row.fingerprint,
        payload=dict(row.payload),
        total_amount=row.total_amount,
        stripe_invoice_id=row.stripe_invoice_id,
        invoice_number=row.invoice_number,
        state=SENT,
    )


def planned(request: BillingRequest, number: int, revises: str) -> RequestVersion:
    return RequestVersion(
        request_id=request.request_id,
        version=number,
        fingerprint=request.fingerprint(),
        payload=request.model_dump(mode="json"),
        total_amount=request.total_amount(),
        revises_invoice=revises,
        state=PLANNED,
    )


def move(session: Session, version: RequestVersion, state: str, **changes: Any) -> None:
    """Set a version's state (and fields), in the caller's transaction."""
    version.state = state
    for name, value in changes.items():
        setattr(version, name, value)
    version.updated_at = utcnow()
    session.add(version)


def carry_content(
    session: Session, row: BillingRequestRow, version: RequestVersion, prices: dict[str, str]
) -> None:
    """Make the request's row (content and lines) version `version`'s, prices pinned.

    In the caller's transaction, which holds the row lock: the row and its lines
    are the latest version from this commit on.
    """
    request = BillingRequest.model_validate(version.payload)
    row.payload = dict(version.payload)
    row.fingerprint = version.fingerprint
    row.total_amount = version.total_amount
    session.execute(delete(RequestLine).where(col(RequestLine.request_id) == row.request_id))
    for position, item in enumerate(request.items):
        key = price_lookup_key(item.sku, request.currency, item.unit_amount)
        session.add(
            RequestLine(
                request_id=row.request_id,
                position=position,
                sku=item.sku,
                name=item.name,
                unit_amount=item.unit_amount,
                quantity=item.quantity,
                description=item.description,
                price_lookup_key=key,
                stripe_price_id=prices[key],
            )
        )
