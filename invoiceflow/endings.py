"""The end of a request's story in the Prefect UI, told without a flow run.

When Stripe settles an invoice (paid, void, uncollectible) our ledger moves at
once (the webhook receiver, dunning, reconcile), while the Prefect UI still
shows the request's invoice run `AwaitingPayment` and its story at `sent`.
`tell` brings both up to the ledger through Prefect's API: each finished
invoice run of the request gets the ending as its state (`Completed`, named
`Paid`, `Void` or `Uncollectible`), and the request's story artifact a new
version, linked to its latest run. A sent invoice whose payment is processing
(a bank debit) is told the same way, `PaymentPending`, and back to
`AwaitingPayment`, with the reason, when that payment fails. What to say is
read from the ledger, not from an event, so events may come in any order and
any number of times: a second telling changes nothing. A few API calls per
request and no flow run: fifty write-offs cost seconds, not fifty subprocesses
of `serve`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from invoiceflow import ledger, story
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from invoiceflow.status import RequestStatus
from invoiceflow.webhooks import inbox

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

# The invoice run's final state names (all `Completed`, so never taken for a run
# still going): while the sent invoice is open, while a payment of it is
# processing, and once Stripe settled it. The crashed-runs automation counts
# each as an end (`invoiceflow.service.automations.FINAL_EVENTS`).
AWAITING_PAYMENT = "AwaitingPayment"
PAYMENT_PENDING = "PaymentPending"
ENDINGS = {
    RecoveryPoint.PAID: "Paid",
    RecoveryPoint.VOID: "Void",
    RecoveryPoint.UNCOLLECTIBLE: "Uncollectible",
}
STATE_NAMES = (AWAITING_PAYMENT, PAYMENT_PENDING, *ENDINGS.values())
# Requests per round trip: their names fit one filter, their runs one page.
_CHUNK = 50
_RUNS_PER_PAGE = 200


def invoice_run_name(request_id: str) -> str:
    """The name of every invoice run of the request (how `tell` finds them)."""
    return f"invoice-{request_id}"


def final_state_name(status: RequestStatus) -> str | None:
    """The name of an invoice run's Completed state for `status` (None: plain Completed)."""
    if status.state is RecoveryPoint.SENT:
        return PAYMENT_PENDING if status.payment_pending else AWAITING_PAYMENT
    return ENDINGS.get(status.state)


@dataclass
class Told:
    """`done`: nothing left to tell for these requests. `later`: an invoice run of
    the request is still going (it might end `AwaitingPayment` after this), so
    tell it again next round."""

    done: list[str] = field(default_factory=list)
    later: list[str] = field(default_factory=list)
    runs_updated: int = 0
    stories_published: int = 0


def tell(client: SyncPrefectClient, engine: Engine, request_ids: Iterable[str]) -> Told:
    """Bring the Prefect UI up to the ledger for each sent or settled request of `request_ids`."""
    told = Told()
    tellable: dict[str, BillingRequestRow] = {}
    for request_id in dict.fromkeys(request_ids):
        row = ledger.load(engine, request_id)
        if row is not None and (row.point in ENDINGS or row.point is RecoveryPoint.SENT):
            tellable[request_id] = row
        else:
            told.done.append(request_id)  # not sent: its run tells its story itself
    ids = list(tellable)
    for start in range(0, len(ids), _CHUNK):
        _tell_chunk(client, engine, [tellable[i] for i in ids[start : start + _CHUNK]], told)
    return told


def tell_inbox(client: SyncPrefectClient, engine: Engine) -> int:
    """Tell the endings of the inbox's events still to tell, then mark them told; how
    many were marked. An event whose request still has an invoice run going stays
    to tell: that run may yet end `AwaitingPayment`, and the next call corrects it."""
    events = inbox.pending_settles(engine)
    if not events:
        return 0
    told = tell(client, engine, [e.request_id for e in events if e.request_id])
    later = set(told.later)
    return inbox.mark_told(engine, [e.event_id for e in events if e.request_id not in later])


def _tell_chunk(
    client: SyncPrefectClient, engine: Engine, rows: list[BillingRequestRow], told: Told
) -> None:
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey
    from prefect.states import Completed

    runs = _invoice_runs(client, [row.request_id for row in rows])
    keys = [story.artifact_key(row.request_id) for row in rows]
    latest = client.read_latest_artifacts(
        artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=keys))
    )
    stories = {collection.key: collection.data for collection in latest}
    for row in rows:
        mine = sorted(runs.get(row.request_id, []), key=_started, reverse=True)
        if any(_going(run) for run in mine):
            told.later.append(row.request_id)
            continue
        status = RequestStatus.from_row(row)
        ending, message = final_state_name(status), status.one_line()
        # A sent invoice's message names why its last payment failed (one_line).
        reason = row.last_error if row.point is RecoveryPoint.SENT else None
        for run in mine:
            state = run.state
            if state is None or not state.is_completed():
                continue  # failed, cancelled, crashed: that run's own end stays
            if _stale(state.name, state.message, ending, reason):
                client.set_flow_run_state(
                    run.id, Completed(name=ending, message=message), force=True
                )
                told.runs_updated += 1
        text = story.markdown(row, ledger.lines(engine, row.request_id))
        key = story.artifact_key(row.request_id)
        if stories.get(key) != text:
            client.create_artifact(
                ArtifactCreate(
                    key=key,
                    type="markdown",
                    data=text,
                    description=story.description(row),
                    flow_run_id=mine[0].id if mine else None,
                )
            )
            told.stories_published += 1
        told.done.append(row.request_id)


def _stale(name: str | None, message: str | None, ending: str | None, reason: str | None) -> bool:
    """The run's state says something else than the ledger: another name, or not
    the reason of the latest failed payment. Not a changed message alone: a sent
    invoice's line counts days overdue, and a dunning run tells every candidate."""
    return name != ending or (reason is not None and reason not in (message or ""))


def _invoice_runs(client: SyncPrefectClient, request_ids: list[str]) -> dict[str, list[FlowRun]]:
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterName,
    )

    by_name = {invoice_run_name(request_id): request_id for request_id in request_ids}
    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=["invoice"])),
        flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=list(by_name))),
        limit=_RUNS_PER_PAGE,
    )
    found: dict[str, list[FlowRun]] = {}
    for run in runs:
        found.setdefault(by_name[run.name], []).append(run)
    return found


def _going(run: FlowRun) -> bool:
    """Running or about to (Pending, Cancelling): its end is still to be written.
    A Scheduled run is not waited for: when it runs, it reads the settlement itself."""
    from prefect.client.schemas.objects import StateType

    return run.state is not None and run.state.type in (
        StateType.RUNNING,
        StateType.PENDING,
        StateType.CANCELLING,
    )


def _started(run: FlowRun) -> float:
    moment = run.start_time or run.expected_start_time or run.created
    return moment.timestamp() if moment is not None else 0.0
