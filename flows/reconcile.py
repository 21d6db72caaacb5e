"""The reconcile flow: our ledger brought in line with Stripe, the webhooks' safety net.

    sweep events since the cursor (applied like webhooks)
      → sweep the unfinished requests' invoices (settle; report drift)
      → finish stuck requests (the invoice flow, as a subflow each)
      → publish what changed; tell the settled requests' endings in the Prefect UI

The work is plain functions in `invoiceflow.reconcile`; this flow runs them
and leaves a markdown artifact of the report for the Prefect UI.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.invoice import run_invoice
from invoiceflow import endings
from invoiceflow.reconcile.report import ReconcileReport
from invoiceflow.reconcile.sweep import reconcile
from invoiceflow.runtime import get_runtime

ARTIFACT_KEY = "reconciliation"


def _run_name() -> str:
    # The day it ran (UTC): a run found by its day in the UI, never a random name.
    return f"reconcile-{datetime.now(UTC):%Y-%m-%d}"


@flow(name="reconcile", flow_run_name=_run_name, retries=0, persist_result=False, log_prints=False)
def reconcile_flow(since: datetime | None = None, stale_minutes: float = 10) -> ReconcileReport:
    """Apply what Stripe knows and we missed; report what we cannot repair.

    `since`: sweep from here instead of the event cursor. `stale_minutes`: how
    long a request below `sent` must sit untouched before it counts as stuck.
    """
    logger = get_run_logger()
    report = reconcile(get_runtime(), since=since, stale_minutes=stale_minutes, resume=run_invoice)
    for line in (*report.changes, *(f"drift: {d}" for d in report.drift), *report.failures):
        logger.info("%s", line)
    logger.info("%s", report.summary())
    create_markdown_artifact(
        markdown=report.markdown(), key=ARTIFACT_KEY, description=report.summary()
    )
    _tell_endings(report.settled_ids)
    return report


def _tell_endings(settled_ids: list[str]) -> None:
    """What this run settled, the invoice runs and stories say now: the requests
    settled by reading their invoice (no event), and the swept events' moves
    (serve's sweeper would tell those, but serve may not be running). Idempotent,
    so telling what serve told already changes nothing. Never fails the run."""
    from prefect.client.orchestration import get_client

    engine = get_runtime().engine
    try:
        with get_client(sync_client=True) as client:
            endings.tell(client, engine, settled_ids)
            endings.tell_inbox(client, engine)
    except Exception:
        get_run_logger().warning("Could not tell the settled requests' endings", exc_info=True)
