"""The body of invoicing one request, shared by the invoice flow and a billing-run unit.

    under the request's lease:
      start attempt ─ prepare (customer ∥ products → prices, joined at catalog_ready)
        → create invoice → add items → finalize → send
      or, for a request already sent: refresh its settlement from Stripe

*How* a step runs is the caller's choice (`Steps`): the invoice flow runs each
as a Prefect task (the customer and catalog branches in parallel, so the UI
shows them); a billing-run unit calls the same `invoiceflow` functions one
after another inside its single task, so a batch of thousands does not pay for
thousands of task runs per request. Each step retries transient Stripe
failures itself (`invoiceflow.retry`); the order, the lease, the failure
bookkeeping and the story live here once.

`bill` opens the request's `Attempt` (`invoiceflow.attempt`) and keeps it live
while it runs; a step, however it is run, is handed the request id and the
lease owner, and works in the attempt they name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sqlmodel import Session

from invoiceflow import catalog, customers, invoicing, lease, ledger
from invoiceflow.approval import hold as approval_hold
from invoiceflow.attempt import Attempt, attempt_of, running
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from invoiceflow.invoicing import DraftGone
from invoiceflow.request import BillingRequest
from invoiceflow.retry import describe
from invoiceflow.runtime import Runtime

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
Step = Callable[[str, str], object]  # (request_id, lease owner) -> whatever it returns

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Steps:
    """How each step of the DAG is run: as a Prefect task, or as a plain call."""

    prepare: Callable[[BillingRequest, str], None]  # customer + catalog, ending catalog_ready
    create_invoice: Step
    add_items: Step
    finalize: Step
    send: Step
    refresh_settlement: Step


@dataclass(frozen=True)
class Billed:
    """How the attempt ended: the request's row, and the failure that stopped it, if any.

    `error` is a failure inside the lease: recorded on the request (unless it
    is `LeaseLost`, where the run that took over owns the request's state).
    Failures before the lease was held (`RequestBusy`) are raised instead.
    """

    row: BillingRequestRow
    error: BaseException | None = None

    @property
    def tells_story(self) -> bool:
        """Whether this attempt's ending is the request's story to publish: not after a
        lost lease, where the run that took over owns the request and tells it."""
        return not isinstance(self.error, ledger.LeaseLost)


def bill(
    rt: Runtime,
    request: BillingRequest,
    owner: str,
    steps: Steps,
    log: Log = _log,
    patience_seconds: float | None = None,
    attempt: Attempt | None = None,
    hold: bool = False,
) -> Billed:
    """Take the request from wherever it stands to sent (or refresh a sent one), under its lease.

    The request must be recorded already (`ledger.submit`). Plain calls only:
    the caller (a flow or task) publishes the request's story from the result,
    so this path runs, and is tested, without Prefect. Another run holding the
    lease is waited for up to `patience_seconds` (None: one lease TTL, so a
    second run of one request finds the first one's work done), then
    `ledger.RequestBusy` is raised. `attempt`: how this attempt runs (e.g.
    `quiet`); None, a new one for `owner`.

    `hold`: stop at a filled draft, recorded `held` (`invoiceflow.approval`).
    A held request goes no further, whoever runs it, until `approve` releases it.
    """
    request_id = request.request_id
    attempt = attempt if attempt is not None else Attempt(owner, request_id)
    if (attempt.owner, attempt.request_id) != (owner, request_id):
        raise ValueError(f"attempt of {attempt.owner}/{attempt.request_id} passed for {owner}")
    ttl = rt.settings.lease_seconds
    patience = ttl if patience_seconds is None else patience_seconds
    started: list[BillingRequestRow] = []

    def start_attempt(session: Session, row: BillingRequestRow) -> None:
        ledger.count_attempt(session, row)  # in the lease's own transaction: one commit
        started.append(row)

    # The lease is renewed for as long as this attempt lives; one that loses it
    # anyway (paused past it, taken over) stops before its next Stripe write.
    with (
        lease.held(rt.engine, request_id, owner, ttl, patience, on_take=start_attempt),
        running(attempt),
    ):
        try:
            row = started[-1]
            attempt.committed(row)  # the lease's commit: the first step starts from it
            if row.attempts > 1 or row.point is not RecoveryPoint.PLANNED:
                # Where a rerun picks up. A first attempt's next line ("Draft
                # invoice … for request …") says as much, and a billing run of
                # thousands pays for every line twice (console and Prefect API).
                log.info(
                    "Request %s (%s) resumes at %s, attempt %d",
                    request_id,
                    row.customer_key,
                    row.recovery_point,
                    row.attempts,
                )
            if row.point is RecoveryPoint.HELD:
                pass  # a filled draft waiting for a person: `invoiceflow approve` releases it
            elif not row.progress.reached(RecoveryPoint.SENT):
                steps.prepare(request, owner)
                stop = partial(_in_attempt, approval_hold.mark_held, rt) if hold else None
                draft_to_sent(request_id, owner, steps, hold=stop)
            elif not row.point.is_terminal:
                # A rerun of a sent request: settled while no webhook reached us?
                steps.refresh_settlement(request_id, owner)
        except ledger.LeaseLost as exc:
            return Billed(ledger.require(rt.engine, request_id), exc)
        except Exception as exc:
            _record_failure(rt, request_id, owner, exc, log)
            return Billed(ledger.require(rt.engine, request_id), exc)
    return Billed(_as_released(attempt.last_commit()) or ledger.require(rt.engine, request_id))


def _as_released(row: BillingRequestRow | None) -> BillingRequestRow | None:
    """The row as our last commit left it, with the lease `lease.held` released since:
    what a read right now would show, short of a webhook recorded in the milliseconds
    since that commit (the story then tells the request as we left it, and the
    receiver's own record of the payment follows)."""
    if row is not None:
        row.lease_owner = row.lease_expires_at = None
    return row


def draft_to_sent(request_id: str, owner: str, steps: Steps, hold: Step | None = None) -> None:
    """create invoice → add items → finalize → send; or, with `hold`, → hold instead.

    A draft deleted in the Dashboard before it was finalized sends the request
    back to `catalog_ready` once, and a new draft is made.
    """
    for attempt in (1, 2):
        try:
            steps.create_invoice(request_id, owner)
            steps.add_items(request_id, owner)
            # The stop point: a filled draft, nothing finalized (False: finalized
            # by an earlier run already, too late to hold; it is sent as before).
            if hold is not None and hold(request_id, owner):
                return
            steps.finalize(request_id, owner)
            break
        except DraftGone:
            if attempt == 2:
                raise
    steps.send(request_id, owner)


def _record_failure(rt: Runtime, request_id: str, owner: str, exc: BaseException, log: Log) -> None:
    """Note the failure on the request, without masking `exc` if that fails too."""
    try:
        ledger.record_failure(rt.engine, request_id, owner, describe(exc))
    except Exception:
        log.exception("Could not record the failure of %s", request_id)


def in_sequence(rt: Runtime) -> Steps:
    """The steps as plain calls, one after another in the caller's thread."""
    return Steps(
        prepare=partial(prepare_in_sequence, rt),
        create_invoice=partial(_in_attempt, invoicing.create_invoice, rt),
        add_items=partial(_in_attempt, invoicing.add_items, rt),
        finalize=partial(_in_attempt, invoicing.finalize, rt),
        send=partial(_in_attempt, invoicing.send, rt),
        refresh_settlement=partial(_in_attempt, invoicing.refresh_settlement, rt),
    )


def _in_attempt(
    step: Callable[[Runtime, str, Attempt], object], rt: Runtime, request_id: str, owner: str
) -> object:
    """A step called as a `Step` is: with the request id and owner of the live attempt."""
    return step(rt, request_id, attempt_of(owner, request_id))


def prepare_in_sequence(rt: Runtime, request: BillingRequest, owner: str) -> None:
    """The customer and catalog branches one after the other, joined at `catalog_ready`.

    The steady state — a customer mapped with the request's details, every
    price mapped — asks nothing of Stripe, so it costs two reads and the one
    commit of `catalog_ready` (which records `customer_ready` with it).
    """
    request_id = request.request_id
    row = attempt_of(owner, request_id).last_commit()  # the lease's commit, moments ago
    known = customers.known(rt, row if row is not None else ledger.require(rt.engine, request_id))
    if known is None:
        customers.ensure_customer(rt, request_id, owner)
    if not catalog.prices_mapped(rt, request):
        product_ids = {
            item.sku: catalog.ensure_product(rt, item.sku, item.name, request_id)
            for item in {item.sku: item for item in request.items}.values()
        }
        for sku, unit_amount in dict.fromkeys((i.sku, i.unit_amount) for i in request.items):
            catalog.ensure_price(
                rt, sku, request.currency, unit_amount, product_ids[sku], request_id
            )
    invoicing.mark_catalog_ready(rt, request_id, attempt_of(owner, request_id), customer=known)
