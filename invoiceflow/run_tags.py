"""Tags on our flow runs: how each was started; an invoice run's customer and currency.

    trigger:http      POST /invoices (given when the run is created)
    trigger:schedule  a deployment's schedule
    trigger:ui        any other deployment run: the UI, `prefect deployment run`
    trigger:cli       the flow called directly: `invoiceflow invoice`, the demo

Only POST /invoices can tag a run as it is created; the others are tagged by
the run itself as it starts (deployment tags would land on every run alike),
through `tag_this_run`, which billing runs use too (`invoiceflow.batch.console`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

    from invoiceflow.request import BillingRequest

logger = logging.getLogger("invoiceflow.run_tags")

MAX_TAG = 100  # Prefect's limit on a tag's length


def tags_for(request: BillingRequest, trigger: str | None) -> list[str]:
    tags = [f"trigger:{trigger}"] if trigger else []
    return [*tags, f"customer:{request.customer.id}", f"currency:{request.currency}"]


def tag_current_run(request: BillingRequest) -> None:
    """Tag the invoice run this is called from: its trigger, customer and currency."""
    tag_this_run(tags_for(request, None))


def tag_this_run(tags: Iterable[str]) -> None:
    """Add `tags`, and `trigger:<schedule|ui|cli>` unless the run has a trigger tag
    already, to the flow run this is called from (any of our flows). Tags are for
    finding runs, not for billing: a failure here is logged and ignored."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run.id))
            wanted = [tag[:MAX_TAG] for tag in tags]
            if not any(tag.startswith("trigger:") for tag in run.tags):
                wanted.insert(0, f"trigger:{_trigger_of(run)}")
            merged = list(dict.fromkeys([*run.tags, *wanted]))
            if merged != run.tags:
                client.update_flow_run(run.id, tags=merged)
    except Exception as exc:
        logger.warning("could not tag flow run %s: %s", flow_run.id, type(exc).__name__)


def _trigger_of(run: FlowRun) -> str:
    """How a run not created by POST /invoices was started."""
    if run.auto_scheduled:
        return "schedule"
    if run.deployment_id is not None:
        return "ui"
    return "cli"
