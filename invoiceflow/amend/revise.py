"""Make version N+1 of a sent request: one Stripe revision of version N's invoice.

    under the request's lease:
      record version N+1 (and the revise intent)
        → create the revision (`from_invoice`, key of request id and N+1)
          and carry the new content onto the request's row: draft_created
        → delete the lines the revision copied from version N
        → add the new lines → finalize (Stripe voids version N's invoice) → send
        → version N+1 sent, version N void

Each Stripe write goes through `write_once`: intent recorded first, keys from
our ids (the revision's from the version number, the rest name the revision's
invoice, so no version meets another's stored answers), and a look in Stripe
before writing again. A rerun resumes at the version's (or the row's) recovery
point; a finished one makes no Stripe call. The lines, finalize and send are the
invoice's own steps (`invoiceflow.invoicing`), run on the request's row, which
carries the latest version from the revision's commit on: from then on the
revised invoice's events are no longer the request's (its `invoice.voided`
changes nothing), the revision's are.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from functools import partial

import stripe

from invoiceflow import catalog, invoicing, lease, ledger, stripe_paging, write_intents
from invoiceflow.amend import settled, versions
from invoiceflow.attempt import Attempt, running
from invoiceflow.db.engine import reading
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint, RequestVersion
from invoiceflow.invoicing.common import batch_key
from invoiceflow.request import BillingRequest
from invoiceflow.retry import describe
from invoiceflow.runtime import Runtime
from invoiceflow.settlement import settled_point
from invoiceflow.stripe_keys import digest, price_lookup_key, request_step_key
from invoiceflow.stripe_write import write_once

log = logging.getLogger(__name__)

# Stripe's bulk line endpoints take a bounded number of lines per call.
LINES_PER_REMOVE_CALL = 50
REVISABLE = ("open", "uncollectible")
# How long an amendment waits for a run still holding the request.
LEASE_PATIENCE_SECONDS = 30.0


class AmendRefused(Exception):
    """The request cannot be amended this way; the message says why and what to do."""


class NeverSent(AmendRefused):
    """The request has no sent invoice to revise: `invoiceflow invoice` sends it."""


class NotRevisable(AmendRefused):
    """The current invoice is paid or void: Stripe revises only open or uncollectible ones."""


class SettledMeanwhile(NotRevisable):
    """The invoice being revised was paid or voided while its revision was a draft: the
    request stays that version, settled, and the revision is dropped."""


class AmendInProgress(AmendRefused):
    """Another version of the request is being made; it must be finished first."""


@dataclass(frozen=True)
class Amended:
    """How an amendment ended: the request's row, and the version it stands at."""

    row: BillingRequestRow
    version: int
    changed: bool  # False: the file is the latest version already, nothing done


def revise_key(request_id: str, version: int) -> str:
    return request_step_key(request_id, f"invoice.revise.v{version}")


def delete_key(request_id: str, invoice_id: str) -> str:
    return request_step_key(request_id, f"invoice.delete.{invoice_id}")


def remove_key(request_id: str, invoice_id: str, line_ids: list[str]) -> str:
    # Names the lines removed: a resumed run removing what is left never meets
    # the stored answer of a call with other lines.
    return request_step_key(request_id, f"lines.remove.{invoice_id}.{digest(*line_ids)}")


def amend(rt: Runtime, request: BillingRequest) -> Amended:
    """Revise the request's latest invoice to `request`'s content, once (see the module doc)."""
    request_id = request.request_id
    _check_shape(ledger.require(rt.engine, request_id), request)
    owner = lease.new_owner(f"amend-{uuid.uuid4().hex[:12]}")
    ttl = rt.settings.lease_seconds
    with lease.held(
        rt.engine, request_id, owner, ttl, LEASE_PATIENCE_SECONDS, on_take=ledger.count_attempt
    ):
        attempt = Attempt(owner, request_id)
        with running(attempt):
            version = _version_to_make(rt, request, attempt)
            if version is None:
                chain = versions.chain(rt.engine, request_id)
                return Amended(ledger.require(rt.engine, request_id), len(chain) or 1, False)
            try:
                _make(rt, request, version, attempt)
            except (ledger.LeaseLost, SettledMeanwhile):
                raise
            except Exception as exc:
                _record_failure(rt, request_id, owner, exc, version.version)
                raise
    return Amended(ledger.require(rt.engine, request_id), version.version, True)


def _check_shape(row: BillingRequestRow, request: BillingRequest) -> None:
    """What a revision keeps (Stripe's rule): the customer and the currency."""
    if request.customer.id != row.customer_key:
        raise AmendRefused(
            f"{request.request_id}: customer.id is {request.customer.id!r}, the invoice's is "
            f"{row.customer_key!r}; a revision keeps its customer — bill the other one under "
            "a new request_id"
        )
    if request.currency != row.currency:
        raise AmendRefused(
            f"{request.request_id}: currency is {request.currency!r}, the invoice's is "
            f"{row.currency!r}; a revision keeps its currency — use a new request_id"
        )


def _version_to_make(
    rt: Runtime, request: BillingRequest, attempt: Attempt
) -> RequestVersion | None:
    """The version this amendment makes or resumes; None when there is nothing to do."""
    request_id = request.request_id
    row = ledger.require(rt.engine, request_id)
    chain = versions.chain(rt.engine, request_id)
    latest = chain[-1] if chain else None
    fingerprint = request.fingerprint()
    if latest is not None and latest.state in versions.IN_PROGRESS:
        if latest.fingerprint != fingerprint:
            raise AmendInProgress(
                f"{request_id}: version {latest.version} is still being made from other "
                "content; run `invoiceflow amend` with that content to finish it first"
            )
        return latest
    if latest is not None and latest.state == versions.DROPPED and latest.stripe_invoice_id:
        _drop_draft_once(rt, request_id, latest.stripe_invoice_id, attempt)
    if row.stripe_invoice_id is None or not _row_at_or_past_sent(row):
        raise NeverSent(
            f"{request_id} was never sent ({row.recovery_point}); there is nothing to "
            "revise — send it with `invoiceflow invoice FILE` (or POST /invoices)"
        )
    if row.fingerprint == fingerprint:
        return None
    invoice_id = row.stripe_invoice_id
    status = row.invoice_status
    if row.point not in (RecoveryPoint.PAID, RecoveryPoint.VOID):
        current = invoicing.retrieve_invoice(rt, invoice_id)  # Stripe is the truth
        status = current.status
        settled = settled_point(status)
        if settled is not None:  # settled while no webhook reached us: record it
            invoicing.record_settlement(rt, request_id, attempt.owner, current, settled)
    if status not in REVISABLE:
        raise NotRevisable(
            f"{request_id}: invoice {invoice_id} is {status}; a paid or void invoice cannot "
            "be revised — bill the change under a new request_id"
        )
    _prepare_catalog(rt, request)
    return _record_version(rt, request, attempt, invoice_id, chain)


def _row_at_or_past_sent(row: BillingRequestRow) -> bool:
    return row.progress.reached(RecoveryPoint.SENT) and row.point is not RecoveryPoint.REJECTED


def _prepare_catalog(rt: Runtime, request: BillingRequest) -> None:
    """The new content's products and prices, shared objects found or made once."""
    if catalog.prices_mapped(rt, request):
        return
    rid = request.request_id
    products = {
        item.sku: catalog.ensure_product(rt, item.sku, item.name, rid)
        for item in {item.sku: item for item in request.items}.values()
    }
    for sku, amount in dict.fromkeys((i.sku, i.unit_amount) for i in request.items):
        catalog.ensure_price(rt, sku, request.currency, amount, products[sku], rid)


def _record_version(
    rt: Runtime,
    request: BillingRequest,
    attempt: Attempt,
    revises: str,
    chain: list[RequestVersion],
) -> RequestVersion:
    """Version N+1, planned, with version 1 if this is the first amendment and the
    revise intent: one commit, before any Stripe write of the amendment."""
    request_id = request.request_id
    with ledger.locked(rt.engine, request_id, attempt.owner) as (session, row):
        if not chain:
            session.add(versions.first_from_row(row))
        number = (chain[-1].version if chain else 1) + 1
        version = versions.planned(request, number, revises)
        session.add(version)
        ledger.note(session, row, f"amending: version {number}", revises=revises)
        intent = ledger.intend_in(
            session, revise_key(request_id, number), "invoice.revise", request_id
        )
    attempt.recorded(intent)
    return versions.chain(rt.engine, request_id)[-1]


def _make(rt: Runtime, request: BillingRequest, version: RequestVersion, attempt: Attempt) -> None:
    request_id = request.request_id
    try:
        if version.state == versions.PLANNED:
            _create_revision(rt, version, attempt)
        version = versions.chain(rt.engine, request_id)[-1]
        if version.state == versions.REVISION_CREATED:
            _remove_copies(rt, version, attempt)
        # The row names the revision unless its original settled meanwhile (the
        # webhook receiver put the request back): then the steps would find it
        # finished, so it is checked before each.
        for step in (invoicing.add_items, invoicing.finalize, invoicing.send):
            _stop_if_revised_settled(rt, version, attempt, recorded_only=True)
            step(rt, request_id, attempt)
    except stripe.InvalidRequestError:
        # Stripe refuses to finalize a revision whose original is paid or void.
        _stop_if_revised_settled(rt, version, attempt, recorded_only=False)
        raise
    _close(rt, request_id, attempt)


def _stop_if_revised_settled(
    rt: Runtime, version: RequestVersion, attempt: Attempt, *, recorded_only: bool
) -> None:
    """Raise NotRevisable, with the request back at the version before settled and the
    draft revision deleted, if the invoice `version` revises was paid or voided while
    the revision was a draft (`invoiceflow.amend.settled`). `recorded_only`: look only
    at the ledger (the webhook receiver recorded it); else ask Stripe."""
    request_id, number = version.request_id, version.version
    row = ledger.require(rt.engine, request_id)
    if row.stripe_invoice_id == version.stripe_invoice_id or version.stripe_invoice_id is None:
        if recorded_only and version.stripe_invoice_id is not None:
            return
        original = invoicing.retrieve_invoice(rt, str(version.revises_invoice))
        point = settled_point(original.status)
        if point not in settled.SETTLES_A_DRAFT_REVISION:
            return
        snapshot = original.to_dict()
        with ledger.locked(rt.engine, request_id, attempt.owner) as (session, row):
            revised = settled.revised_version(session, row, original.id, snapshot)
            if revised is None:
                return
            earlier, latest = revised
            problem = settled.go_back(
                session, row, earlier, latest, snapshot, point, "read from Stripe"
            )
        if problem is not None:
            raise NotRevisable(f"{request_id}: {problem}; version {number} was not finalized")
    if version.stripe_invoice_id is not None:
        drop_draft(rt, request_id, version.stripe_invoice_id, attempt)
    row = ledger.require(rt.engine, request_id)
    raise SettledMeanwhile(
        f"{request_id}: invoice {row.stripe_invoice_id} was {row.recovery_point} meanwhile, "
        f"so version {number} was not made (its draft revision deleted) — the request stays "
        f"as it was {row.recovery_point}; bill the change under a new request_id"
    )


def drop_draft(rt: Runtime, request_id: str, invoice_id: str, attempt: Attempt) -> None:
    """Delete a dropped version's draft revision, once: read first (Stripe ignores
    idempotency keys on DELETE), intent recorded before."""
    key = delete_key(request_id, invoice_id)

    def delete(_key: str) -> str:
        try:
            rt.stripe.v1.invoices.delete(invoice_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise
        return invoice_id

    _, key = write_once(
        rt,
        key=key,
        step="invoice.delete",
        request_id=request_id,
        write=delete,
        find=lambda _intent: _gone(rt, invoice_id),
        what=f"delete the draft revision {invoice_id}",
        look_first=True,
        attempt=attempt,
    )
    with ledger.locked(rt.engine, request_id, attempt.owner) as (session, row):
        ledger.fulfil(session, key, invoice_id)
        ledger.note(session, row, "dropped version's draft revision deleted", invoice=invoice_id)


def _drop_draft_once(rt: Runtime, request_id: str, invoice_id: str, attempt: Attempt) -> None:
    """A dropped version's draft revision, if no amendment deleted it yet (the webhook
    receiver dropped the version, and makes no Stripe call)."""
    key = delete_key(request_id, invoice_id)
    done = any(
        w.idempotency_key == key and w.completed_at is not None
        for w in write_intents.writes_for(rt.engine, request_id)
    )
    if not done:
        drop_draft(rt, request_id, invoice_id, attempt)


def _gone(rt: Runtime, invoice_id: str) -> str | None:
    """`invoice_id` if Stripe no longer has it (deleted)."""
    try:
        invoicing.retrieve_invoice(rt, invoice_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return invoice_id
        raise
    return None


def _create_revision(rt: Runtime, version: RequestVersion, attempt: Attempt) -> None:
    request_id, number = version.request_id, version.version
    revises = str(version.revises_invoice)
    row = ledger.require(rt.engine, request_id)
    customer_id = str(row.stripe_customer_id)
    params: stripe.params.InvoiceCreateParams = {
        "from_invoice": {"action": "revision", "invoice": revises},
        # We drive every transition ourselves, as for the first version.
        "auto_advance": False,
    }
    revision, key = write_once(
        rt,
        key=revise_key(request_id, number),
        step="invoice.revise",
        request_id=request_id,
        write=lambda k: rt.stripe.v1.invoices.create(params, {"idempotency_key": k}),
        find=lambda _intent: _find_revision(rt, customer_id, revises),
        what=f"revise {revises} (version {number} of {request_id})",
        # Our ledger may be new, restored or another machine's: one list first.
        look_first=True,
        attempt=attempt,
    )
    attempt.done(log, "Revision %s of %s for request %s", revision.id, revises, request_id)
    prices = _prices_of(rt, BillingRequest.model_validate(version.payload))
    with ledger.locked(rt.engine, request_id, attempt.owner) as (session, row):
        current = next(v for v in versions.chain_in(session, request_id) if v.version == number)
        versions.move(session, current, versions.REVISION_CREATED, stripe_invoice_id=revision.id)
        versions.carry_content(session, row, current, prices)
        # The row's invoice is the revision from now on: its facts start afresh.
        row.stripe_invoice_id = revision.id
        row.invoice_status, row.invoice_number = revision.status, None
        row.hosted_invoice_url = row.due_date = row.finalized_at = row.sent_at = None
        row.amount_due, row.amount_paid, row.payment_pending_since = revision.amount_due, None, None
        ledger.fulfil(session, key, revision.id)
        ledger.rewind(
            session,
            row,
            RecoveryPoint.DRAFT_CREATED,
            f"version {number}: revision of {revises} created",
            invoice=revision.id,
            revises=revises,
        )


def _prices_of(rt: Runtime, request: BillingRequest) -> dict[str, str]:
    keys = {price_lookup_key(i.sku, request.currency, i.unit_amount) for i in request.items}
    with reading(rt.engine) as session:
        found = catalog.prices_in(session, keys)
    missing = keys - set(found)
    if missing:
        raise RuntimeError(f"prices {sorted(missing)} are not ready")
    return found


def _find_revision(rt: Runtime, customer_id: str, revises: str) -> stripe.Invoice | None:
    """A revision of `revises` that Stripe holds already (made by a run that died before
    recording it); consistent listing, never Search."""
    invoices = stripe_paging.every(
        rt.stripe.v1.invoices.list, {"customer": customer_id}, f"list invoices of {customer_id}"
    )
    for invoice in invoices:
        source = invoice.from_invoice
        if source is not None and source.action == "revision" and source.invoice == revises:
            return invoice
    return None


def _remove_copies(rt: Runtime, version: RequestVersion, attempt: Attempt) -> None:
    """Delete every line the revision copied from the version before.

    Only copies are on it at this point (our lines come after this commit), and
    Stripe removes a call's lines all or none: what a resumed run still finds
    is removed under a key naming exactly those lines.
    """
    request_id, invoice_id = version.request_id, str(version.stripe_invoice_id)
    keys: list[str] = []
    while copies := [line.id for line in _lines(rt, invoice_id)]:
        chunk = copies[:LINES_PER_REMOVE_CALL]
        params: stripe.params.InvoiceRemoveLinesParams = {
            "lines": [{"id": line_id, "behavior": "delete"} for line_id in chunk]
        }
        _, key = write_once(
            rt,
            key=remove_key(request_id, invoice_id, chunk),
            step="lines.remove",
            request_id=request_id,
            write=partial(_remove_lines, rt, invoice_id, params),
            find=partial(_removed, rt, invoice_id, chunk),
            what=f"remove {len(chunk)} copied lines from {invoice_id}",
            attempt=attempt,
        )
        keys.append(key)
    with ledger.locked(rt.engine, request_id, attempt.owner) as (session, row):
        current = next(
            v for v in versions.chain_in(session, request_id) if v.version == version.version
        )
        versions.move(session, current, versions.COPIES_REMOVED)
        for key in keys:
            ledger.fulfil(session, key, invoice_id)
        ledger.note(session, row, "copied lines removed", invoice=invoice_id, calls=len(keys))
        first_batch = ledger.intend_in(
            session, batch_key(request_id, invoice_id, 0), "lines.add", request_id
        )
    attempt.recorded(first_batch)


def _remove_lines(
    rt: Runtime, invoice_id: str, params: stripe.params.InvoiceRemoveLinesParams, key: str
) -> stripe.Invoice:
    return rt.stripe.v1.invoices.remove_lines(invoice_id, params, {"idempotency_key": key})


def _lines(rt: Runtime, invoice_id: str) -> list[stripe.InvoiceLineItem]:
    return list(
        stripe_paging.every(
            partial(rt.stripe.v1.invoices.line_items.list, invoice_id),
            {},
            f"list lines of {invoice_id}",
        )
    )


def _removed(
    rt: Runtime, invoice_id: str, chunk: list[str], _intent: ledger.Intent
) -> stripe.Invoice | None:
    """The invoice if none of `chunk`'s lines is on it any more."""
    present = {line.id for line in _lines(rt, invoice_id)}
    return None if present & set(chunk) else invoicing.retrieve_invoice(rt, invoice_id)


def _close(rt: Runtime, request_id: str, attempt: Attempt) -> None:
    """The version went out: it is `sent`, the one it revised `void` (Stripe voided it
    when this one was finalized)."""
    with ledger.locked(rt.engine, request_id, attempt.owner) as (session, row):
        chain = versions.chain_in(session, request_id)
        latest = chain[-1]
        if latest.state == versions.SENT or row.stripe_invoice_id != latest.stripe_invoice_id:
            return
        versions.move(session, latest, versions.SENT, invoice_number=row.invoice_number)
        for older in chain[:-1]:
            if older.state != versions.VOID:
                versions.move(session, older, versions.VOID)
        ledger.note(
            session,
            row,
            f"amended: version {latest.version} sent",
            invoice=latest.stripe_invoice_id,
            replaces=latest.revises_invoice,
        )
    log.info("Request %s is at version %d: %s", request_id, latest.version, row.invoice_number)


def _record_failure(
    rt: Runtime, request_id: str, owner: str, exc: BaseException, number: int
) -> None:
    """The request failed — once its row carries the new version. Before that the row
    is still the sent version before, which stands; the failure is only noted."""
    try:
        latest = versions.chain(rt.engine, request_id)[-1]
        if latest.version == number and latest.state == versions.PLANNED:
            with ledger.locked(rt.engine, request_id, owner) as (session, row):
                ledger.note(session, row, f"amending version {number} failed", error=describe(exc))
            return
        ledger.record_failure(rt.engine, request_id, owner, describe(exc))
    except Exception:
        log.exception("Could not record the failure of %s", request_id)
