"""Prefect automations that tell a person: a billing run failed, a held run waits too long.

INVOICEFLOW_NOTIFY_BLOCK names the Prefect block they notify through, as
`<block type slug>/<name>`: a `webhook` block is called with a JSON body
(`kind`, `text`, `flow_run_id`, `flow_run`), any other (`slack-webhook`, `email`,
…) must be a notification block and gets a subject and the text. Unset, the
automations are removed: nobody asked to be told.

    invoiceflow-billing-run-failed     a billing-run flow run ends Failed (requests
                                       failed: its message names them), once per run
    invoiceflow-approval-waiting       a billing-run flow run stays Suspended (held,
                                       waiting for its approval form, `flows/approval.py`)
                                       longer than INVOICEFLOW_APPROVAL_REMIND_HOURS

Both are installed by name, like the crashed-runs automation, by `invoiceflow
automations` and at `invoiceflow serve`'s start.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from prefect.automations import AutomationCore
    from prefect.client.orchestration import PrefectClient
    from prefect.events.actions import ActionTypes

    from invoiceflow.settings import Settings

FAILED_RUN_AUTOMATION = "invoiceflow-billing-run-failed"
APPROVAL_WAITING_AUTOMATION = "invoiceflow-approval-waiting"
NOTIFICATIONS = (FAILED_RUN_AUTOMATION, APPROVAL_WAITING_AUTOMATION)
BILLING_RUN_FLOW = "billing-run"
# Whatever ends a held run's wait: the form answered (Resuming), a cancel, the timeout.
WAIT_ENDED = [
    "prefect.flow-run.Resuming",
    "prefect.flow-run.Scheduled",
    "prefect.flow-run.Running",
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelling",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
]
# Prefect's floor for a proactive trigger's window.
MIN_WINDOW = timedelta(seconds=10)


class NotifyBlockMissing(LookupError):
    """INVOICEFLOW_NOTIFY_BLOCK names no block on this Prefect server."""


def _action(block_id: UUID, block_type: str, kind: str, text: str) -> ActionTypes:
    """The notice: `text` is one Jinja expression (a string), Prefect fills it in."""
    from prefect.events.actions import CallWebhook, SendNotification

    if block_type != "webhook":
        body = "{{ " + text + " }}"
        return SendNotification(
            block_document_id=block_id, subject=f"invoiceflow: {kind}", body=body
        )
    # A run's state message may hold quotes: Jinja's tojson writes the JSON strings.
    fields = {
        "kind": json.dumps(kind),
        "text": "{{ (" + text + ") | tojson }}",
        "flow_run": "{{ flow_run.name | tojson }}",
        "flow_run_id": "{{ (flow_run.id | string) | tojson }}",
    }
    payload = "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"
    return CallWebhook(block_document_id=block_id, payload=payload)


def failed_run_automation(block_id: UUID, block_type: str) -> AutomationCore:
    from prefect.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=FAILED_RUN_AUTOMATION,
        description="Tells INVOICEFLOW_NOTIFY_BLOCK when a billing run ends Failed.",
        enabled=True,
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={
                "prefect.resource.role": "flow",
                "prefect.resource.name": BILLING_RUN_FLOW,
            },
            expect={"prefect.flow-run.Failed"},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            _action(
                block_id,
                block_type,
                "billing-run-failed",
                '"billing run " ~ flow_run.name ~ " ended Failed: " ~ flow_run.state.message',
            )
        ],
    )


def approval_waiting_automation(
    block_id: UUID, block_type: str, remind_after: timedelta
) -> AutomationCore:
    from prefect.automations import AutomationCore, EventTrigger, Posture

    hours = remind_after.total_seconds() / 3600
    return AutomationCore(
        name=APPROVAL_WAITING_AUTOMATION,
        description=(
            "Tells INVOICEFLOW_NOTIFY_BLOCK when a held billing run has waited for approval "
            "longer than INVOICEFLOW_APPROVAL_REMIND_HOURS."
        ),
        enabled=True,
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={
                "prefect.resource.role": "flow",
                "prefect.resource.name": BILLING_RUN_FLOW,
            },
            after={"prefect.flow-run.Suspended"},
            expect=set(WAIT_ENDED),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=max(remind_after, MIN_WINDOW),
        ),
        actions=[
            _action(
                block_id,
                block_type,
                "approval-waiting",
                f'"billing run " ~ flow_run.name ~ " has waited over {hours:g} h for approval: '
                "answer its form in the Prefect UI (Resume), or run `invoiceflow approve RUN` "
                'or `invoiceflow reject RUN --reason ...`"',
            )
        ],
    )


def wanted(settings: Settings, block_id: UUID, block_type: str) -> list[AutomationCore]:
    remind = timedelta(hours=settings.approval_remind_hours)
    return [
        failed_run_automation(block_id, block_type),
        approval_waiting_automation(block_id, block_type, remind),
    ]


async def ensure_notifications(settings: Settings) -> dict[str, UUID]:
    """Create or update the notification automations (by name); remove them when
    INVOICEFLOW_NOTIFY_BLOCK is unset. Their ids by name; empty when removed."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        if settings.notify_block is None:
            for name in NOTIFICATIONS:
                for automation in await client.read_automations_by_name(name):
                    assert automation.id is not None
                    await client.delete_automation(automation.id)
            return {}
        block_type, block_id = await _block(client, settings.notify_block)
        return {
            automation.name: await _ensure(client, automation)
            for automation in wanted(settings, block_id, block_type)
        }


async def ensure_or_warn() -> None:
    """`serve`'s start: the notifications as configured; a missing block is said, not fatal
    (the service runs without notifications rather than not at all)."""
    import logging

    from invoiceflow.settings import get_settings

    try:
        await ensure_notifications(get_settings())
    except NotifyBlockMissing as exc:
        logging.getLogger("invoiceflow.service").warning("%s; notifications are off", exc)


async def _block(client: PrefectClient, slug: str) -> tuple[str, UUID]:
    from prefect.exceptions import ObjectNotFound

    block_type, _, name = slug.partition("/")
    try:
        document = await client.read_block_document_by_name(name, block_type, include_secrets=False)
    except ObjectNotFound:
        raise NotifyBlockMissing(
            f"INVOICEFLOW_NOTIFY_BLOCK: no {block_type} block named {name!r} on this Prefect "
            "server; create it (UI: Blocks, or `prefect block create`) or fix the name"
        ) from None
    return block_type, document.id


async def _ensure(client: PrefectClient, wanted: AutomationCore) -> UUID:
    from prefect.automations import AutomationCore

    existing = await client.read_automations_by_name(wanted.name)
    if not existing:
        return await client.create_automation(wanted)
    first, *duplicates = existing
    assert first.id is not None
    if AutomationCore.model_validate(first.model_dump(exclude={"id"})) != wanted:
        await client.update_automation(first.id, wanted)
    for duplicate in duplicates:  # two hosts starting at once may both create it
        assert duplicate.id is not None
        await client.delete_automation(duplicate.id)
    return first.id
