"""What the Prefect console shows of a billing run: its tags.

    trigger:<cli|ui|schedule>  how it was started (as on invoice runs, `invoiceflow.run_tags`)
    currency:<ccy>             each currency it invoiced
    failed:<outcome>           each kind of failure it ended with (`refused`, `temporary`, …)
    unfinished                 entries with no outcome (the process died, the database went)

The trigger is added as the run starts, the rest once it is reported. The run
id is in the run's name (`billing-run-<run id>`); the tag `billing-run:<run id>`
stays its shard runs' own (`dispatch.run_tag`: how a stop finds them to cancel).
Tags are for finding runs, not for billing: a failure here is logged and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from invoiceflow.batch.outcome import Outcome
from invoiceflow.batch.report import BatchReport

logger = logging.getLogger("invoiceflow.batch.console")

_MAX_TAG = 100  # Prefect's limit on a tag's length


def reported_tags(report: BatchReport) -> list[str]:
    tags = [f"currency:{currency}" for currency in report.totals]
    known = {outcome.value for outcome in Outcome}
    tags += [f"failed:{o}" for o in report.counts if o in known and not Outcome(o).done]
    if report.counts.get("unfinished"):
        tags.append("unfinished")
    return tags


def tag_current_run(tags: Iterable[str]) -> None:
    """Add `tags`, and `trigger:…` unless it has one, to the flow run this is called from.

    The trigger as `invoiceflow.run_tags` tells it for invoice runs: a run of
    a deployment's schedule, another deployment run (the UI, `prefect
    deployment run`), or the flow called directly (`invoiceflow batch`).
    """
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run.id))
            wanted = [tag[:_MAX_TAG] for tag in tags]
            if not any(tag.startswith("trigger:") for tag in run.tags):
                if run.auto_scheduled:
                    wanted.insert(0, "trigger:schedule")
                elif run.deployment_id is not None:
                    wanted.insert(0, "trigger:ui")
                else:
                    wanted.insert(0, "trigger:cli")
            merged = list(dict.fromkeys([*run.tags, *wanted]))
            if merged != run.tags:
                client.update_flow_run(run.id, tags=merged)
    except Exception as exc:
        logger.warning("could not tag flow run %s: %s", flow_run.id, type(exc).__name__)
