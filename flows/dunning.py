"""The dunning flow: reminders for overdue open invoices, then the write-off.

    overdue candidates ─┬─ dun R1 ─┐
                        ├─ dun R2 ─┼─ table artifact + summary → report
                        └─ dun Rn ─┘

One Prefect task per request, on a thread pool, each its own unit of work
(`invoiceflow.dunning.act.dun`): one failing never stops the others, and a
rerun takes exactly the steps that are still due. Time is injectable
(`as_of`), so a whole month of dunning can be simulated in seconds.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from invoiceflow import endings, lease, progress
from invoiceflow.dunning import run
from invoiceflow.dunning.report import DunningReport, StepLine
from invoiceflow.runtime import get_runtime
from tasks.dunning import dun_request

# Requests dunned at once. Each unit makes a handful of Stripe calls; eight in
# flight stays well under Stripe's test-mode rate limit (25 requests/s).
MAX_PARALLEL_REQUESTS = 8
# A run over many requests says how far it got at most this often.
PROGRESS_EVERY_SECONDS = 10.0
ARTIFACT_KEY = "dunning"


def _run_name() -> str:
    # The day it runs as of (a datetime, or its ISO text once Prefect serialised
    # it), or today (UTC): a run found by its day in the UI, never a random name.
    as_of = flow_run.parameters.get("as_of") or datetime.now(UTC)
    return f"dunning-{str(as_of)[:10]}"


@flow(
    name="dunning",
    flow_run_name=_run_name,
    task_runner=cast(
        TaskRunner[PrefectFuture[Any]], ThreadPoolTaskRunner(max_workers=MAX_PARALLEL_REQUESTS)
    ),
    retries=0,
    log_prints=False,
)
def dunning_flow(as_of: datetime | None = None) -> DunningReport:
    """Take every dunning step that is due as of `as_of` (None: now)."""
    rt = get_runtime()
    planned = run.plan(rt, as_of)
    request_ids = planned.request_ids
    progress.note(
        "dunning: %d overdue candidate(s) as of %s",
        len(request_ids),
        f"{planned.now:%Y-%m-%d %H:%M} UTC",
    )
    owner = lease.new_owner(f"dunning-{flow_run.id or uuid.uuid4().hex}")
    futures = [(rid, dun_request.submit(rid, planned.judged_at, owner)) for rid in request_ids]
    lines: list[StepLine] = []
    said = progress.Throttle(every=PROGRESS_EVERY_SECONDS)
    said.due()  # the first note above counts
    for done, (request_id, future) in enumerate(futures, start=1):
        lines += _result(request_id, future)
        if said.due():
            progress.note("dunning: %d of %d request(s) done", done, len(futures))
    report = DunningReport(as_of=planned.now, candidates=len(request_ids), lines=lines)
    _publish(report)
    _tell_endings(request_ids)
    return report


def _result(request_id: str, future: PrefectFuture[list[StepLine]]) -> list[StepLine]:
    """The unit's lines, or one line saying why it failed (the others go on)."""
    try:
        return future.result()
    except Exception as exc:
        return [run.failed_line(request_id, exc)]


def _publish(report: DunningReport) -> None:
    """The run's table and summary. Never fails the run: they are for people."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    try:
        create_table_artifact(table=report.table(), key=ARTIFACT_KEY, description=report.summary())
        create_markdown_artifact(
            markdown=report.markdown(), key=f"{ARTIFACT_KEY}-summary", description=report.summary()
        )
    except Exception:
        progress.log.warning("Could not publish the dunning report", exc_info=True)


def _tell_endings(request_ids: list[str]) -> None:
    """The written-off (or meanwhile paid) requests' invoice runs say so in the UI
    now, not only once their webhooks are swept. Never fails the run."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            endings.tell(client, get_runtime().engine, request_ids)
    except Exception:
        progress.log.warning("Could not tell the settled requests' endings", exc_info=True)


def run_dunning(as_of: datetime | None = None) -> DunningReport:
    """Run the flow here and now; its report, typed."""
    return dunning_flow(as_of)
