"""Start a billing run's shards as deployment runs, and wait for them with progress.

The shards are runs of the `billing-shard` deployment on the `invoiceflow`
process work pool, started with `run_deployment(timeout=0)`: they run in
parallel on whichever workers poll the pool, and show in the UI as children of
the billing run. Each is keyed `<run id>:<attempt>:<shard>/<shards>` (Prefect's
idempotency key), so one attempt never starts the same shard twice; a new
attempt (a rerun) starts fresh ones.

A shard whose process dies (a worker SIGKILLed, a lost machine) cannot report
its end: the crashed-runs automation (`invoiceflow automations`) marks it
Crashed once its heartbeats stop, and only then does this wait end. A shard
that never started is this wait's own to judge (`invoiceflow.stale_runs`): one
left Pending by a worker that died while starting it, or left Scheduled with
no worker polling, is marked Crashed after INVOICEFLOW_STALE_RUN_SECONDS and,
while a worker polls, scheduled again for it; so the wait always ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from sqlalchemy.engine import Engine

from invoiceflow import progress, stale_runs
from invoiceflow.batch import manifest
from invoiceflow.batch.shards import SHARD_DEPLOYMENT, WORK_POOL, ShardEnd, not_registered

# How often the states of the shard runs are read.
POLL_SECONDS = 1.0
# A progress line (manifest counts, shard states) this often.
PROGRESS_EVERY_SECONDS = 5.0
# A shard no worker picked up for this long is said out loud (then every as long again).
UNCLAIMED_NOTE_SECONDS = 30.0
# A shard that never started is scheduled again at most this often, then left
# Crashed: its entries wait for a rerun rather than for ever.
MAX_RESCHEDULES = 2


def run_tag(run_id: str) -> str:
    """The tag on every shard run of billing run `run_id` (to find them, in the UI too)."""
    return f"billing-run:{run_id}"[:100]


def cancel_shards(run_id: str) -> int:
    """Ask Prefect to cancel the shard runs of `run_id` still going (Ctrl-C of the parent):
    their workers stop them, and a rerun resumes what they did not finish. How many."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[run_tag(run_id)]))
        )
        going = [run for run in runs if run.state is not None and not run.state.is_final()]
        for run in going:
            client.set_flow_run_state(run.id, Cancelling(message="the billing run was interrupted"))
    return len(going)


def require_deployment() -> None:
    """Raise `ShardingError` (one line naming the fix) unless `billing-shard` is registered."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(SHARD_DEPLOYMENT)
        except ObjectNotFound:
            raise not_registered(get_current_settings().api.url) from None


def start_shards(run_id: str, attempt: int, shards: int) -> list[UUID]:
    """One `billing-shard` run per shard; their flow run ids, in shard order."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings

    ids = []
    for shard in range(shards):
        try:
            run = run_deployment(  # sync here: this runs in a sync flow
                SHARD_DEPLOYMENT,
                parameters={"run_id": run_id, "shard": shard, "shards": shards},
                flow_run_name=f"billing-shard-{run_id}-{shard + 1}-of-{shards}",
                timeout=0,  # start them all; `wait` watches them together
                idempotency_key=f"{run_id}:{attempt}:{shard}/{shards}",
                tags=[run_tag(run_id)],
            )
        except ObjectNotFound:
            raise not_registered(get_current_settings().api.url) from None
        assert isinstance(run, FlowRun)
        ids.append(run.id)
    return ids


def wait(
    engine: Engine,
    run_id: str,
    total: int,
    flow_run_ids: list[UUID],
    log: Callable[[str], Any],
) -> list[ShardEnd]:
    """Until every shard run is final: a progress line every few seconds, then how each ended.

    A shard that never started and is dead by `stale_runs.why_dead` is ended
    here (`_take_back`), so this returns even when no worker ever takes it.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    shards = len(flow_run_ids)
    index = {run_id_: shard for shard, run_id_ in enumerate(flow_run_ids)}
    next_line = time.monotonic() + PROGRESS_EVERY_SECONDS
    unclaimed_since: dict[int, float] = {}
    said_unclaimed: dict[int, float] = {}
    rescheduled = [0] * shards
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)),
                limit=shards,
            )
            states = {index[run.id]: run.state for run in runs}
            now = time.monotonic()
            if (
                all(state is not None and state.is_final() for state in states.values())
                and len(states) == shards
            ):
                return [
                    ShardEnd(shard, str(flow_run_ids[shard]), _name(states[shard]))
                    for shard in range(shards)
                ]
            polls = stale_runs.Polls(client)
            for run in runs:
                shard, state = index[run.id], run.state
                if state is None or not (state.is_scheduled() or state.is_pending()):
                    unclaimed_since.pop(shard, None)
                    continue
                if stale_runs.judge(client, run, polls) is not None:
                    label = f"shard {shard + 1}/{shards} of billing run {run_id} ({run.id})"
                    if _take_back(client, run, label, rescheduled[shard], polls):
                        rescheduled[shard] += 1
                    unclaimed_since.pop(shard, None)
                    continue
                since = unclaimed_since.setdefault(shard, now)
                last = said_unclaimed.get(shard, since)
                if now - last >= UNCLAIMED_NOTE_SECONDS:
                    said_unclaimed[shard] = now
                    progress.note(
                        "shard %d/%d of billing run %s is still %s after %.0f s: is a "
                        "worker running (`prefect worker start --pool %s`)?",
                        shard + 1,
                        shards,
                        run_id,
                        _name(state),
                        now - since,
                        WORK_POOL,
                    )
            if now >= next_line:
                next_line = now + PROGRESS_EVERY_SECONDS
                log(_progress_line(engine, run_id, total, states))
            time.sleep(POLL_SECONDS)


def _take_back(
    client: Any, run: Any, label: str, rescheduled: int, polls: stale_runs.Polls
) -> bool:
    """End a shard run that never started (Crashed, saying why), and schedule it again
    when a worker could take it; whether it was scheduled again.

    Only a Pending one goes back: a worker took it once, so one may again. A
    Scheduled one is dead because nothing polls; scheduling it again would
    wait for nobody. Either way nothing of it ran, so nothing is undone.
    """
    from datetime import UTC, datetime

    reason = stale_runs.end(client, run.id)
    if reason is None:
        return False  # its process came up after all
    if (
        run.state.is_pending()
        and rescheduled < MAX_RESCHEDULES
        and stale_runs.polled_lately(polls.of(run.deployment_id), datetime.now(UTC))
        and stale_runs.schedule_again(client, run.id, reason)
    ):
        progress.note(
            "%s %s; marked Crashed and scheduled again for another worker (%d of %d)",
            label,
            reason,
            rescheduled + 1,
            MAX_RESCHEDULES,
        )
        return True
    progress.note("%s %s; marked Crashed, its entries wait for a rerun", label, reason)
    return False


def _name(state: Any) -> str:
    return str(state.name if state is not None else "unknown")


def _progress_line(engine: Engine, run_id: str, total: int, states: dict[int, Any]) -> str:
    try:
        done, failed = manifest.finished_count(engine, run_id)
        counts = f"billed {done}/{total} ({failed} failed)"
    except Exception:  # a busy database: the next line will have them
        counts = f"{total} requests"
    tally: dict[str, int] = {}
    for state in states.values():
        tally[_name(state)] = tally.get(_name(state), 0) + 1
    shown = ", ".join(f"{count} {name}" for name, count in sorted(tally.items()))
    return f"{counts}; shards: {shown}"
