"""The settle flow: the invoice's story, finished after Stripe's payment event.

    inbox event (applied by the webhook receiver) → log it → publish the story

The receiver already recorded the event in our ledger, in the transaction that
stored it; this run changes nothing in Stripe or in the ledger. It exists so
that the Prefect UI shows the request's ending — paid, void, uncollectible — as
a run of its own, with the request's markdown story updated. One run per
applied event: the sweeper starts it with the event id as its idempotency key.
"""

from __future__ import annotations

from prefect import State, flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed

from invoiceflow import ledger, story
from invoiceflow.runtime import get_runtime
from invoiceflow.status import RequestStatus
from invoiceflow.webhooks import inbox


def _run_name() -> str:
    return f"settle-{flow_run.parameters.get('event_id', 'unknown')}"


@flow(name="settle", flow_run_name=_run_name, retries=2, retry_delay_seconds=10)
def settle_flow(event_id: str) -> State[RequestStatus]:
    """Tell the end of the request's story that `event_id` (an applied Stripe event) wrote."""
    logger = get_run_logger()
    engine = get_runtime().engine
    event = inbox.get(engine, event_id)
    if event is None or event.request_id is None:
        raise LookupError(f"no applied event {event_id!r} in the inbox")
    row = ledger.require(engine, event.request_id)
    status = RequestStatus.from_row(row)
    logger.info("Stripe %s (%s): %s", event.type, event_id, event.outcome)
    logger.info("%s", status.one_line())
    story.publish(engine, row)
    return Completed(message=status.one_line(), data=status)
