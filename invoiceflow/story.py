"""The invoice's story as the Prefect UI shows it: a markdown artifact per request.

The artifact is keyed by the request, so each run, and each later move of its
invoice told without a run (a payment pending, failed, or settled:
`invoiceflow.endings`), adds a version and the UI's artifact page shows the
request's history. It
holds business data only — customer, lines, totals, status, hosted link —
never a key or a secret.
"""

from __future__ import annotations

import hashlib
import logging
import re

from sqlalchemy.engine import Engine

from invoiceflow import ledger
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint, RequestLine
from invoiceflow.money import format_minor_units

log = logging.getLogger(__name__)

# Prefect artifact keys: lowercase letters, digits and dashes only.
_KEY_UNSAFE = re.compile(r"[^a-z0-9-]+")


def artifact_key(request_id: str) -> str:
    """A valid artifact key per request, distinct for distinct request ids."""
    readable = _KEY_UNSAFE.sub("-", request_id.lower()).strip("-")[:40]
    if readable == request_id:
        return f"invoice-{readable}"
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:10]
    return f"invoice-{readable}-{digest}"


def state_words(row: BillingRequestRow) -> str:
    """Where the request stands, as a person says it: 'payment pending' while a
    payment of its sent invoice processes (a bank debit), else its recovery point."""
    if row.point is RecoveryPoint.SENT and row.payment_pending_since is not None:
        return "payment pending"
    return row.recovery_point


def description(row: BillingRequestRow) -> str:
    """The artifact's one line in the UI's list."""
    return f"{row.request_id}: {state_words(row)}"


def markdown(row: BillingRequestRow, lines: list[RequestLine]) -> str:
    """The request as finance reads it."""
    customer = row.payload["customer"]

    def money(amount: int) -> str:
        return format_minor_units(amount, row.currency)

    invoice = row.stripe_invoice_id or "not created yet"
    number = f" ({row.invoice_number})" if row.invoice_number else ""
    link = f"[hosted invoice]({row.hosted_invoice_url})" if row.hosted_invoice_url else "—"
    state = state_words(row)
    if state != row.recovery_point and row.payment_pending_since is not None:
        state += f" (since {row.payment_pending_since:%Y-%m-%d %H:%M} UTC)"
    out = [
        f"# Invoice for `{row.request_id}`",
        "",
        f"**Status:** {state} · **Stripe invoice:** `{invoice}`{number} · {link}",
        "",
        f"**Customer:** {customer['name']} <{customer['email']}> (`{row.customer_key}`)",
        "",
        "| # | item | quantity | unit | amount |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for line in lines:
        out.append(
            f"| {line.position} | {line.name} (`{line.sku}`) | {line.quantity} "
            f"| {money(line.unit_amount)} | {money(line.unit_amount * line.quantity)} |"
        )
    total = f"**Total:** {money(row.total_amount)}"
    if row.amount_due is not None:
        total += f" · **Amount due:** {money(row.amount_due)}"
    out += ["", total]
    if row.last_error:
        out += ["", f"**Last error:** {row.last_error}"]
    return "\n".join(out) + "\n"


def versions(engine: Engine, row: BillingRequestRow) -> str:
    """An amended request's chain (`invoiceflow amend`): each version, its invoice, its
    state, oldest first; nothing for a request never amended."""
    from invoiceflow.amend.versions import links

    chain = links(engine, row)
    if not chain:
        return ""
    out = [
        "",
        "**Versions:**",
        "",
        "| version | invoice | number | state |",
        "| ---: | --- | --- | --- |",
    ]
    for link in chain:
        out.append(
            f"| {link.version} | `{link.invoice_id or '—'}` | {link.number or '—'} | {link.state} |"
        )
    return "\n".join(out) + "\n"


def publish(engine: Engine, row: BillingRequestRow) -> None:
    """A new version of the request's artifact, from inside a flow run (which it
    is linked to). Never fails the run: the story is for people, not the ledger."""
    from prefect.artifacts import create_markdown_artifact

    try:
        create_markdown_artifact(
            markdown=markdown(row, ledger.lines(engine, row.request_id)) + versions(engine, row),
            key=artifact_key(row.request_id),
            description=description(row),
        )
    except Exception:
        log.warning("Could not publish the story of %s", row.request_id, exc_info=True)
