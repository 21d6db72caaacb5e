"""Prefect alone: what a billing run's orchestration costs with no invoicing in it.

The same shape as `flows.billing_run` — one flow, a task per request named
`invoice-<request id>` on a pool of INVOICEFLOW_BATCH_WORKERS threads,
submitted through the same window (`flows.billing_run.in_window`), each
publishing a keyed markdown artifact the size of an invoice's story — but
each task does nothing else: no database, no Stripe. Its rate is the most
any billing run can reach on this machine with this Prefect server, whatever
invoiceflow does; the ceiling divided by it is the share of the machine our
own work leaves to Prefect, a ratio that holds when the machine's speed does
not.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.billing_run import in_window, thread_pool

# About the size of a 3-line invoice's story (`invoiceflow.story.markdown`).
_STORY = "# Invoice for `{request_id}`\n\n" + "| # | item | quantity | unit | amount |\n" * 12


@task(
    name="invoice",
    task_run_name="invoice-{request_id}",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=0,
)
def empty_invoice(request_id: str) -> str:
    create_markdown_artifact(
        markdown=_STORY.format(request_id=request_id),
        key=f"invoice-{request_id}",
        description=f"Invoice for {request_id}",
    )
    return "invoiced"


@flow(name="prefect-floor", task_runner=thread_pool(), retries=0, log_prints=False)
def prefect_floor_flow(prefix: str, count: int) -> int:
    """`count` empty invoice tasks, as a billing run submits them; returns how many completed."""
    request_ids = (f"{prefix}-{n}" for n in range(count))
    return sum(f.result() == "invoiced" for f in in_window(empty_invoice.submit, request_ids))
