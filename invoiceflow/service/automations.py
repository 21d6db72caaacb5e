"""The automation that marks our dead flow runs `Crashed`.

A flow run whose process dies (SIGKILL, OOM, a lost host) never reports its
end: Prefect shows it Running forever. Every running flow run emits a
`prefect.flow-run.heartbeat` event (PREFECT_FLOWS_HEARTBEAT_FREQUENCY), but
Prefect acts on missing heartbeats only through an automation, and none exists
by default. `invoiceflow serve` creates or updates this one at start (by name,
so restarts and several hosts share one); `invoiceflow automations` does the
same for the multi-host `prefect deploy` path.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from prefect.automations import AutomationCore

logger = logging.getLogger("invoiceflow.service.automations")

CRASHED_RUNS_AUTOMATION = "invoiceflow-crashed-runs"
OUR_FLOWS = ["invoice", "billing-run", "billing-shard", "dunning", "reconcile"]
# A window of three heartbeats: one late or lost event is not a death.
MISSED_HEARTBEATS = 3
# The end of a run ends its heartbeats too; these events close the window so a
# finished run is never marked Crashed. `AwaitingPayment`, `PaymentPending`,
# `Paid`, `Void` and `Uncollectible` are our Completed states
# (`invoiceflow.endings.STATE_NAMES`): an invoice run may end with any of them.
FINAL_EVENTS = [
    "prefect.flow-run.Completed",
    "prefect.flow-run.AwaitingPayment",
    "prefect.flow-run.PaymentPending",
    "prefect.flow-run.Paid",
    "prefect.flow-run.Void",
    "prefect.flow-run.Uncollectible",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
    # A held billing run waiting for its approval form has no process (`flows/approval.py`).
    "prefect.flow-run.Suspended",
    "prefect.flow-run.Paused",
]


def crash_window() -> timedelta | None:
    """How long without a heartbeat means dead; None when heartbeats are off."""
    from prefect.settings import get_current_settings

    every = get_current_settings().flows.heartbeat_frequency
    return None if every is None else timedelta(seconds=MISSED_HEARTBEATS * every)


def crashed_runs_automation(within: timedelta) -> AutomationCore:
    from prefect.automations import AutomationCore, ChangeFlowRunState, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType

    seconds = int(within.total_seconds())
    return AutomationCore(
        name=CRASHED_RUNS_AUTOMATION,
        description="Marks an invoiceflow flow run Crashed when its heartbeats stop.",
        enabled=True,  # an update re-enables it too: it is part of the service
        trigger=EventTrigger(
            # One window per flow run, renewed by each heartbeat. It opens at
            # Running too, an event the server emits itself: a process killed
            # before its first heartbeat reached the server is still judged.
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": OUR_FLOWS},
            after={"prefect.flow-run.Running", "prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *FINAL_EVENTS},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {seconds} s: the process running it died",
            )
        ],
    )


async def ensure_crashed_runs_automation(within: timedelta | None = None) -> UUID | None:
    """Create or update the automation (idempotent, by name); its id, or None
    when flow heartbeats are switched off and there is nothing to watch."""
    from prefect.automations import AutomationCore
    from prefect.client.orchestration import get_client

    window = within or crash_window()
    if window is None:
        logger.warning("flow heartbeats are off: crashed runs will stay Running")
        return None
    wanted = crashed_runs_automation(window)
    async with get_client() as client:
        existing = await client.read_automations_by_name(CRASHED_RUNS_AUTOMATION)
        if not existing:
            return await client.create_automation(wanted)
        first, *duplicates = existing  # two hosts starting at once may both create it
        assert first.id is not None
        # Only when it differs: an update gives the trigger a fresh id on the server,
        # and Prefect keys each run's open window by it, so every window open at this
        # restart is forgotten: a run that died just before would stay Running forever.
        # Compared as models: its event sets come back in the creator's order.
        if AutomationCore.model_validate(first.model_dump(exclude={"id"})) != wanted:
            await client.update_automation(first.id, wanted)
        for duplicate in duplicates:
            assert duplicate.id is not None
            await client.delete_automation(duplicate.id)
        return first.id
