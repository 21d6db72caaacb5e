"""The invoice flow: one billing request → exactly one Stripe invoice, sent once.

    record request ─┬─ ensure customer ────────────────────┐
                    └─ ensure product ─ ensure price (x n) ──┴─ catalog ready
      → create invoice → add items → finalize → send → (awaiting payment: a webhook)

The product/price branch and the customer branch run in parallel. Every step
is idempotent and checkpointed in our database, so the flow can be rerun at any
time — after a crash, a failure, or concurrently — and it resumes where the
request stands, making zero Stripe writes for work already done.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from prefect import State, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from invoiceflow import lease, ledger, story
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.invoicing import DraftGone
from invoiceflow.outcomes import failure_message
from invoiceflow.request import BillingRequest
from invoiceflow.retry import describe
from invoiceflow.run_tags import tag_current_run
from invoiceflow.runtime import get_runtime
from invoiceflow.status import RequestStatus
from tasks import billing

# The final state's name while the sent invoice is open: the UI shows which
# runs are done with their part and wait for the customer, not for a worker.
AWAITING_PAYMENT = "AwaitingPayment"
# Parallel Stripe calls of one run. Stripe allows 25 requests/s in test mode;
# eight steps in flight, each a couple of calls long, stays under it.
MAX_PARALLEL_STEPS = 8


def _run_name() -> str:
    request = flow_run.parameters.get("request")
    request_id = (
        request.request_id if isinstance(request, BillingRequest) else request["request_id"]
    )
    return f"invoice-{request_id}"


@task(name="record-request", cache_policy=NO_CACHE, persist_result=False)
def record_request(request: BillingRequest) -> None:
    """Store the request as received (or confirm it is the one stored)."""
    ledger.submit(get_runtime().engine, request)


@flow(
    name="invoice",
    flow_run_name=_run_name,
    task_runner=cast(
        TaskRunner[PrefectFuture[Any]], ThreadPoolTaskRunner(max_workers=MAX_PARALLEL_STEPS)
    ),
    # Step retries live on the tasks; rerunning the whole flow is the operator's call.
    retries=0,
    log_prints=False,
)
def invoice_flow(request: BillingRequest) -> State[RequestStatus]:
    """Turn one billing request into one sent Stripe invoice.

    The run ends once the invoice is sent: `Completed(name="AwaitingPayment")`
    while it is open. The payment arrives later as a signed webhook, which the
    receiver records; no worker waits for it, and Stripe is not polled.
    """
    logger = get_run_logger()
    rt = get_runtime()
    request_id = request.request_id
    tag_current_run(request)  # trigger:<cli|ui|schedule>, customer:<id>, currency:<ccy>
    record_request(request)

    owner = lease.new_owner(flow_run.id or uuid.uuid4().hex)
    ttl = rt.settings.lease_seconds
    # The lease is renewed for as long as this run lives; a run that loses it
    # anyway (paused past it, taken over) stops before its next Stripe write.
    with lease.held(rt.engine, request_id, owner, ttl, patience_seconds=ttl):
        try:
            row = ledger.start_attempt(rt.engine, request_id, owner)
            logger.info("Request %s (%s) at %s", request_id, row.customer_key, row.recovery_point)
            if not row.progress.reached(RecoveryPoint.SENT):
                _prepare_catalog_and_customer(request, owner)
                _draft_to_sent(request_id, owner)
            elif not row.point.is_terminal:
                # A rerun of a sent request: settled while no webhook reached us?
                billing.refresh_settlement(request_id, owner)
        except ledger.LeaseLost as exc:
            # The run that took over owns the request's state now.
            return Failed(message=failure_message(exc), data=exc)
        except Exception as exc:
            _record_failure(request_id, owner, exc)
            story.publish(rt.engine, ledger.require(rt.engine, request_id))
            # The run's page says why in business terms; calling the flow
            # still raises `exc` itself.
            return Failed(message=failure_message(exc), data=exc)

    row = ledger.require(rt.engine, request_id)
    status = RequestStatus.from_row(row)
    logger.info("%s", status.one_line())
    story.publish(rt.engine, row)
    if status.state is RecoveryPoint.SENT:
        return Completed(name=AWAITING_PAYMENT, message=status.one_line(), data=status)
    return Completed(message=status.one_line(), data=status)


def run_invoice(request: BillingRequest) -> RequestStatus:
    """Run the flow here and now; its result, typed (the flow returns its final state)."""
    return cast(RequestStatus, invoice_flow(request))


def _draft_to_sent(request_id: str, owner: str) -> None:
    """create invoice → add items → finalize → send.

    A draft deleted in the Dashboard before it was finalized sends the request
    back to `catalog_ready` once, and a new draft is made.
    """
    for attempt in (1, 2):
        try:
            billing.create_invoice(request_id, owner)
            billing.add_items(request_id, owner)
            billing.finalize(request_id, owner)
            break
        except DraftGone:
            if attempt == 2:
                raise
    billing.send(request_id, owner)


def _record_failure(request_id: str, owner: str, exc: BaseException) -> None:
    """Note the failure on the request, without masking `exc` if that fails too."""
    try:
        ledger.record_failure(get_runtime().engine, request_id, owner, describe(exc))
    except Exception:
        get_run_logger().exception("Could not record the failure of %s", request_id)


def _prepare_catalog_and_customer(request: BillingRequest, owner: str) -> None:
    """The two parallel branches, joined at `catalog_ready`."""
    request_id = request.request_id
    customer = billing.ensure_customer.submit(request_id, owner)
    products = {
        item.sku: billing.ensure_product.submit(item.sku, item.name, request_id)
        for item in {item.sku: item for item in request.items}.values()
    }
    # Resolved here, not passed on as futures: a failed product then reports
    # its own cause, and prices need no lookups of upstream task runs.
    product_ids = {sku: future.result() for sku, future in products.items()}
    prices = [
        billing.ensure_price.submit(
            sku, request.currency, unit_amount, product_ids[sku], request_id
        )
        for sku, unit_amount in dict.fromkeys((i.sku, i.unit_amount) for i in request.items)
    ]
    # .result() re-raises a branch's failure here, before anything depends on it.
    customer.result()
    for price in prices:
        price.result()
    billing.mark_catalog_ready(request_id, owner)
