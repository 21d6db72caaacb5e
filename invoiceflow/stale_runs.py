"""When a flow run that never started is dead, and what to do with it.

A deployment run starts in two hops: a worker (or `serve`'s runner) claims it
by moving it Scheduled → Pending, then starts a process, and the process moves
it to Running. Prefect watches neither hop: a claimer killed between the two
leaves the run Pending forever, and a run nobody polls for stays Scheduled
forever. The crashed-runs automation only sees runs that reached Running.

    Completed, Running, Paused, Cancelling      alive (or done): not ours to judge
    Crashed, Failed, Cancelled                  dead: it ended without finishing
    Pending longer than the bound               dead: its claimer died before the
                                                process came up (a start takes
                                                seconds; the bound is minutes)
    Scheduled, due longer than the bound ago,   dead: nothing will ever take it
      and its deployment not polled lately

INVOICEFLOW_STALE_RUN_SECONDS is the bound. A billing run's wait for its shards
(`invoiceflow.batch.dispatch`) and a repeated POST /invoices
(`invoiceflow.service.trigger`) both judge by `why_dead`, and both end a dead
run that is not final yet with `end` (Crashed, the reason in its message)
before anything takes its work over, so the UI tells what happened.

Nobody waits on most of `serve`'s runs: a client that POSTed once, a
scheduled billing, dunning or reconcile run. So `serve` also rescues its own
deployments' runs (`rescue`, every `rescue_every`): one stranded Pending is
ended and scheduled again, and its restarted runner takes it. Only Pending:
a run that ended Crashed or Failed is the crashed-runs automation's verdict or
the flow's own, for a person (or a repeated POST) to start again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

# How recently something must have asked for a deployment's runs for a
# Scheduled run of it to count as queued rather than abandoned: the window in
# which Prefect's own foreman keeps a polled deployment READY
# (PREFECT_SERVER_SERVICES_FOREMAN_DEPLOYMENT_LAST_POLLED_TIMEOUT_SECONDS).
POLLED_WITHIN = timedelta(seconds=60)

_ENDED = {"CRASHED", "FAILED", "CANCELLED"}


@dataclass(frozen=True)
class Seen:
    """What the rule needs of a flow run, as Prefect's API shows it."""

    state_type: str  # Prefect's StateType value: "PENDING", "SCHEDULED", …
    state_name: str  # "Pending", "Late", "AwaitingRetry", …
    since: datetime  # when the run entered that state
    due: datetime | None = None  # a Scheduled run's time
    polled: datetime | None = None  # when anything last asked for its deployment's runs


def why_dead(seen: Seen, now: datetime, bound: timedelta) -> str | None:
    """Why the run is dead (a clause: "stayed Pending for 200 s: …"), or None while it
    is alive or completed."""
    if seen.state_type in _ENDED:
        return f"ended {seen.state_name}"
    if seen.state_type == "PENDING":
        stuck = now - seen.since
        if stuck > bound:
            # Whoever claimed it is gone: a live worker never picks a Pending run up.
            return (
                f"stayed {seen.state_name} for {stuck.total_seconds():.0f} s: "
                "the worker that claimed it died before its process started"
            )
        return None
    if seen.state_type == "SCHEDULED":
        late = now - max(seen.since, seen.due or seen.since)
        if late > bound and not polled_lately(seen.polled, now):
            return (
                f"due {late.total_seconds():.0f} s ago, and no worker has polled "
                f"its deployment in the last {POLLED_WITHIN.total_seconds():.0f} s"
            )
    return None


def polled_lately(polled: datetime | None, now: datetime) -> bool:
    """Whether a worker (or `serve`) is polling the deployment: it could take a run now."""
    return polled is not None and now - polled <= POLLED_WITHIN


def bound() -> timedelta:
    from invoiceflow.settings import get_settings

    return timedelta(seconds=get_settings().stale_run_seconds)


def seen(run: FlowRun, polled: datetime | None) -> Seen:
    state = run.state
    if state is None:  # a run being created: treat as just scheduled
        return Seen("SCHEDULED", "Scheduled", datetime.now(UTC), polled=polled)
    return Seen(
        state.type.value,
        state.name or state.type.value.title(),
        state.timestamp,
        state.state_details.scheduled_time,
        polled,
    )


def judge(client: SyncPrefectClient, run: FlowRun, polls: Polls | None = None) -> str | None:
    """`why_dead` for a run read from Prefect, now."""
    polled = (polls or Polls(client)).of(run.deployment_id)
    return why_dead(seen(run, polled), datetime.now(UTC), bound())


class Polls:
    """When each deployment was last polled, read once per deployment."""

    def __init__(
        self, client: SyncPrefectClient, known: dict[UUID, datetime | None] | None = None
    ) -> None:
        self._client = client
        self._seen: dict[UUID, datetime | None] = dict(known or {})

    def of(self, deployment_id: UUID | None) -> datetime | None:
        if deployment_id is None:
            return None
        if deployment_id not in self._seen:
            deployment = self._client.read_deployment(deployment_id)
            self._seen[deployment_id] = deployment.last_polled
        return self._seen[deployment_id]


def end(client: SyncPrefectClient, run_id: UUID, *, only_pending: bool = False) -> str | None:
    """Mark a dead run Crashed, saying why, unless it is final already; why it is dead,
    or None when it is alive after all (or, with `only_pending`, no longer Pending:
    someone else ended it, and what follows it is theirs).

    Judged again on a fresh read: a run that moved on since (its process came
    up after all) is left alone. Prefect has no compare-and-set on states, so
    the window between this read and the proposal remains; a run caught in it
    is billed safely anyway (the ledger's leases and idempotency keys), it
    only shows Crashed.
    """
    from prefect.client.schemas.objects import State
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Crashed

    run = client.read_flow_run(run_id)
    if only_pending and (run.state is None or run.state.type.value != "PENDING"):
        return None
    reason = judge(client, run)
    if reason is None or (run.state is not None and run.state.is_final()):
        return reason
    crashed: State[Any] = Crashed(message=reason)
    if client.set_flow_run_state(run_id, crashed).status is not SetStateStatus.ACCEPT:
        return None  # Prefect refused: the run is somewhere we did not judge
    return reason


def why_stranded(seen: Seen, now: datetime, bound: timedelta) -> str | None:
    """Why `serve` should take the run back (it stayed Pending past the bound: the
    process that claimed it died), or None. Ended runs are not this rescue's: see above."""
    return why_dead(seen, now, bound) if seen.state_type == "PENDING" else None


def rescue_every(bound: timedelta) -> float:
    """Seconds between `serve`'s rescues: a few per bound, at most every 30 s."""
    return max(1.0, min(30.0, bound.total_seconds() / 3))


def rescue(client: SyncPrefectClient, deployment_ids: list[UUID]) -> list[tuple[UUID, str]]:
    """End every run of these deployments stranded Pending past the bound and schedule
    it again (for the runner polling them); each rescued run and why it was dead."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    pending = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PENDING]))
        ),
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids)),
        limit=200,
    )
    rescued = []
    for run in pending:
        if why_stranded(seen(run, None), datetime.now(UTC), bound()) is None:
            continue
        # `end` judges again on a fresh read: a run whose process came up since is left.
        reason = end(client, run.id, only_pending=True)
        if reason is not None and schedule_again(client, run.id, reason):
            rescued.append((run.id, reason))
    return rescued


def schedule_again(client: SyncPrefectClient, run_id: UUID, reason: str) -> bool:
    """Put a run ended by `end` back on its deployment's queue (AwaitingRetry, due now),
    for any worker to take; whether Prefect accepted it."""
    from prefect.client.schemas.objects import State
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import AwaitingRetry

    again: State[Any] = AwaitingRetry(message=f"scheduled again: it {reason}")
    return client.set_flow_run_state(run_id, again).status is SetStateStatus.ACCEPT
