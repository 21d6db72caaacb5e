"""The end of a request's story in the Prefect UI, told without a flow run.

When Stripe settles an invoice (paid, void, uncollectible) our ledger moves at
once (the webhook receiver, dunning, reconcile), while the Prefect UI still
shows the request's invoice run `AwaitingPayment` and its story at `sent`.
`tell` brings both up to the ledger through Prefect's API: each finished
invoice run of the request gets the ending as its state (`Completed`, named
`Paid`, `Void` or `Uncollectible`), and the request's story artifact a new
version, linked to its latest run. What to say is read from the ledger, not
from an event, so events may come in any order and any number of times: a
second telling changes nothing. A few API calls per request and no flow run:
fifty write-offs cost seconds, not fifty subprocesses of `serve`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from invoiceflow import ledger, story
from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from invoiceflow.status import RequestStatus

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

# The invoice run's final state names (all `Completed`): while the sent invoice
# is open, and once Stripe settled it.
AWAITING_PAYMENT = "AwaitingPayment"
ENDINGS = {
    RecoveryPoint.PAID: "Paid",
    RecoveryPoint.VOID: "Void",
    RecoveryPoint.UNCOLLECTIBLE: "Uncollectible",
}
# Requests per round trip: their names fit one filter, their runs one page.
_CHUNK = 50
_RUNS_PER_PAGE = 200


def invoice_run_name(request_id: str) -> str:
    """The name of every invoice run of the request (how `tell` finds them)."""
    return f"invoice-{request_id}"


def final_state_name(point: RecoveryPoint) -> str | None:
    """The name of an invoice run's Completed state at `point` (None: plain Completed)."""
    if point is RecoveryPoint.SENT:
        return AWAITING_PAYMENT
    return ENDINGS.get(point)


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
    """Bring the Prefect UI up to the ledger for each settled request of `request_ids`."""
    told = Told()
    settled: dict[str, BillingRequestRow] = {}
    for request_id in dict.fromkeys(request_ids):
        row = ledger.load(engine, request_id)
        if row is not None and row.point in ENDINGS:
            settled[request_id] = row
        else:
            told.done.append(request_id)  # not settled: nothing to tell (yet)
    ids = list(settled)
    for start in range(0, len(ids), _CHUNK):
        _tell_chunk(client, engine, [settled[i] for i in ids[start : start + _CHUNK]], told)
    return told


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
        ending = ENDINGS[row.point]
        message = RequestStatus.from_row(row).one_line()
        for run in mine:
            if run.state is not None and run.state.is_completed() and run.state.name != ending:
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
                    description=f"{row.request_id}: {row.recovery_point}",
                    flow_run_id=mine[0].id if mine else None,
                )
            )
            told.stories_published += 1
        told.done.append(row.request_id)


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
