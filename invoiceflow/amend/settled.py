"""The invoice being revised settled while its revision was still a draft.

Stripe will not finalize a revision once the invoice it revises is paid or void,
so that payment (or a void by hand) is the request's outcome: the request goes
back to the version whose invoice settled — its content, lines and invoice —
settled, and the version being made is `dropped`. Whichever hears of it first
does this, under the row lock: the webhook receiver (the settling event, see
`invoiceflow.webhooks.apply`) or `amend` (Stripe's refusal, or a row that no
longer names its revision). `amend` alone deletes the draft revision in Stripe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlmodel import Session

from invoiceflow import catalog, invoice_facts, ledger
from invoiceflow.amend import versions
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint, RequestVersion
from invoiceflow.request import BillingRequest
from invoiceflow.stripe_keys import price_lookup_key

# What settles a revised invoice while its revision is a draft. Uncollectible does
# not: Stripe still finalizes a revision of an uncollectible invoice.
SETTLES_A_DRAFT_REVISION = (RecoveryPoint.PAID, RecoveryPoint.VOID)


def revised_version(
    session: Session, row: BillingRequestRow, invoice_id: str, invoice: Mapping[str, Any]
) -> tuple[RequestVersion, RequestVersion] | None:
    """(the version whose invoice is `invoice_id`, the version revising it) when the
    request's latest version is a revision of `invoice_id` still being made — not
    finalized, so `invoice_id` cannot have been voided by it; else None."""
    chain = versions.chain_in(session, row.request_id)
    if len(chain) < 2:
        return None
    latest = chain[-1]
    if latest.state not in versions.IN_PROGRESS or latest.revises_invoice != invoice_id:
        return None
    if row.stripe_invoice_id == latest.stripe_invoice_id and row.progress.reached(
        RecoveryPoint.FINALIZED
    ):
        return None  # finalized: Stripe voided `invoice_id` for it
    if invoice.get("latest_revision"):
        return None  # voided by a finalized revision (an event older than our record of it)
    earlier = next((v for v in chain if v.stripe_invoice_id == invoice_id), None)
    return None if earlier is None else (earlier, latest)


def event_of_revised(
    session: Session,
    row: BillingRequestRow,
    invoice: Mapping[str, Any],
    to: RecoveryPoint | None,
    source: str,
    event_id: str,
) -> tuple[str, str] | None:
    """The webhook receiver's move for a settling event of an invoice that is not the
    row's: (outcome kind, detail) when it is the invoice being revised, paid or voided
    while its revision is a draft; None for any other invoice (ignored as before)."""
    invoice_id = invoice.get("id")
    if to not in SETTLES_A_DRAFT_REVISION or not isinstance(invoice_id, str):
        return None
    revised = revised_version(session, row, invoice_id, invoice)
    if revised is None:
        return None
    earlier, latest = revised
    problem = go_back(session, row, earlier, latest, invoice, to, source, event=event_id)
    if problem is not None:
        return "ignored", problem
    return "applied", f"request {row.request_id} is {to.value} (version {earlier.version})"


def amount_problem(version: RequestVersion, invoice: Mapping[str, Any]) -> str | None:
    """Why a paid invoice cannot be this version's payment (the webhook's rule, with the
    version's total): it bills exactly the total, and says no more than it paid."""
    total, paid = invoice.get("total"), invoice.get("amount_paid")
    if total != version.total_amount:
        return (
            f"invoice {invoice.get('id')} totals {total}, "
            f"version {version.version} {version.total_amount}"
        )
    if not isinstance(paid, int) or not 0 <= paid <= version.total_amount:
        return f"invoice {invoice.get('id')} says {paid} paid of {version.total_amount}"
    return None


def go_back(
    session: Session,
    row: BillingRequestRow,
    earlier: RequestVersion,
    latest: RequestVersion,
    invoice: Mapping[str, Any],
    to: RecoveryPoint,
    source: str,
    **detail: Any,
) -> str | None:
    """Make the request `earlier` again, settled `to` from `invoice` (as Stripe showed it),
    and drop `latest`; in the caller's transaction holding the row lock. Returns why not
    (a payment that cannot be the version's), having moved nothing."""
    if to is RecoveryPoint.PAID and (problem := amount_problem(earlier, invoice)):
        ledger.note(session, row, "Stripe payment not recorded", reason=problem, **detail)
        return problem
    content = BillingRequest.model_validate(earlier.payload)
    keys = {price_lookup_key(i.sku, content.currency, i.unit_amount) for i in content.items}
    versions.carry_content(session, row, earlier, catalog.prices_in(session, keys))
    row.stripe_invoice_id, row.invoice_number = earlier.stripe_invoice_id, earlier.invoice_number
    # The revision's facts go with it; the settled invoice's are taken as Stripe shows them.
    row.invoice_status = row.hosted_invoice_url = row.due_date = None
    row.payment_pending_since = None
    snapshot = invoice if invoice.get("status") else {**invoice, "status": to.value}
    invoice_facts.merge_invoice(row, snapshot)
    versions.move(session, latest, versions.DROPPED)
    versions.move(session, earlier, to.value)
    ledger.settle(
        session,
        row,
        to,
        f"invoice {to.value} ({source}) before version {latest.version} was finalized; "
        f"version {latest.version} dropped",
        invoice=earlier.stripe_invoice_id,
        revision=latest.stripe_invoice_id,
        **detail,
    )
    return None
