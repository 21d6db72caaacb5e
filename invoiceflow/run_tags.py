"""Tags on each invoice flow run: how it was started, for whom, in which currency.

    trigger:http      POST /invoices (given when the run is created)
    trigger:schedule  a deployment's schedule
    trigger:ui        any other deployment run: the UI, `prefect deployment run`
    trigger:cli       the flow called directly: `invoiceflow invoice`, the demo

Only POST /invoices can tag a run as it is created; the others are tagged by
the run itself as it starts (deployment tags would land on every run alike).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from invoiceflow.request import BillingRequest

logger = logging.getLogger("invoiceflow.run_tags")


def tags_for(request: BillingRequest, trigger: str | None) -> list[str]:
    tags = [f"trigger:{trigger}"] if trigger else []
    return [*tags, f"customer:{request.customer.id}", f"currency:{request.currency}"]


def tag_current_run(request: BillingRequest) -> None:
    """Add the missing tags to the flow run this is called from. Tags are for
    finding runs, not for billing: a failure here is logged and ignored."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run.id))
            if any(tag.startswith("trigger:") for tag in run.tags):
                trigger = None
            elif run.auto_scheduled:
                trigger = "schedule"
            elif run.deployment_id is not None:
                trigger = "ui"
            else:
                trigger = "cli"
            tags = list(dict.fromkeys([*run.tags, *tags_for(request, trigger)]))
            if tags != run.tags:
                client.update_flow_run(run.id, tags=tags)
    except Exception as exc:
        logger.warning("could not tag flow run %s: %s", flow_run.id, type(exc).__name__)
