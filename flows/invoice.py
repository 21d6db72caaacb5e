"""The invoice flow: one billing request → exactly one Stripe invoice, sent once.

    record request ─┬─ ensure customer ────────────────────┐
                    └─ ensure product ─ ensure price (x n) ──┴─ catalog ready
      → create invoice → add items → finalize → send → (awaiting payment: a webhook)

The product/price branch and the customer branch run in parallel. Every step
is idempotent and checkpointed in our database, so the flow can be rerun at any
time — after a crash, a failure, or concurrently — and it resumes where the
request stands, making zero Stripe writes for work already done.

The order of the steps, the lease and the failure bookkeeping are
`invoiceflow.pipeline`'s, shared with billing runs; here each step is a task.
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

from invoiceflow import lease, ledger, pipeline, story
from invoiceflow.endings import AWAITING_PAYMENT, final_state_name, invoice_run_name
from invoiceflow.outcomes import failure_message
from invoiceflow.request import BillingRequest
from invoiceflow.run_tags import tag_current_run
from invoiceflow.runtime import get_runtime
from invoiceflow.status import RequestStatus
from tasks import billing

# The final state is named after where the request stands: `AwaitingPayment`
# while the sent invoice is open (the UI shows which runs are done with their
# part and wait for the customer, not for a worker), `Paid`, `Void` or
# `Uncollectible` once settled (`PaymentPending` while a payment processes). A
# run left `AwaitingPayment` is renamed as the invoice moves on
# (`invoiceflow.endings`). AWAITING_PAYMENT is imported above.
__all__ = ["AWAITING_PAYMENT", "invoice_flow", "run_invoice"]
# Parallel Stripe calls of one run. Stripe allows 25 requests/s in test mode;
# eight steps in flight, each a couple of calls long, stays under it.
MAX_PARALLEL_STEPS = 8


def _run_name() -> str:
    request = flow_run.parameters.get("request")
    request_id = (
        request.request_id if isinstance(request, BillingRequest) else request["request_id"]
    )
    return invoice_run_name(request_id)


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
    receiver records; no worker waits for it, and Stripe is not polled. A run
    of a request already settled ends `Paid`, `Void` or `Uncollectible`.
    """
    logger = get_run_logger()
    rt = get_runtime()
    tag_current_run(request)  # trigger:<cli|ui|schedule>, customer:<id>, currency:<ccy>
    record_request(request)

    owner = lease.new_owner(flow_run.id or uuid.uuid4().hex)
    billed = pipeline.bill(rt, request, owner, STEPS_AS_TASKS, logger)
    if billed.tells_story:
        story.publish(rt.engine, billed.row)
    if billed.error is not None:
        # The run's page says why in business terms; calling the flow still
        # raises the error itself. (Lost lease: the run that took over owns it.)
        return Failed(message=failure_message(billed.error), data=billed.error)

    status = RequestStatus.from_row(billed.row)
    logger.info("%s", status.one_line())
    named = final_state_name(status)
    if named is not None:
        return Completed(name=named, message=status.one_line(), data=status)
    return Completed(message=status.one_line(), data=status)


def run_invoice(request: BillingRequest) -> RequestStatus:
    """Run the flow here and now; its result, typed (the flow returns its final state)."""
    return cast(RequestStatus, invoice_flow(request))


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


# Each step a Prefect task: the UI shows the DAG, and a failed step's outer
# retries (`tasks.billing`) rerun just that step.
STEPS_AS_TASKS = pipeline.Steps(
    prepare=_prepare_catalog_and_customer,
    create_invoice=billing.create_invoice,
    add_items=billing.add_items,
    finalize=billing.finalize,
    send=billing.send,
    refresh_settlement=billing.refresh_settlement,
)
