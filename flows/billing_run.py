"""The billing run: every request of a source, billed in chunks of Prefect work.

    read source → open manifest (new, or resume) ─┬─ bill requests 1-10 ──┐
                                                   ├─ bill requests 11-20 ─┼─ report
                                                   └─ …                    ┘

One Prefect task per chunk of requests (INVOICEFLOW_BATCH_CHUNK, sized by
`invoiceflow.batch.chunks` so every thread gets several), on a thread pool of
INVOICEFLOW_BATCH_WORKERS: never a flow run or subflow per request (each costs
up to a second of heartbeat join), and a chunk bills its requests one after
the other as plain calls (a task per request costs the Prefect server as much
CPU as the invoicing; a task per step as much again). Each chunk publishes one
table artifact (request, customer, amount, invoice, outcome, link). With
INVOICEFLOW_BATCH_CHUNK=1 it is a task per request (`invoice-<request id>`)
with each request's story artifact, as before chunks.

A unit records its own outcome in the manifest, so one bad request never stops
the others and a rerun — after a crash, or to retry what failed for a while —
resumes only what did not finish. A run with failed or unfinished requests
ends Failed (its message names them; calling the flow raises
`report.RequestsFailed`, `run_billing` returns the report either way), and
carries tags like an invoice run's (`invoiceflow.batch.console`).

The parameters are references (a path, "pending", a run id), never the
requests themselves: Prefect refuses parameters over 512 KiB.

With `shards` > 1 (INVOICEFLOW_BATCH_SHARDS, `invoiceflow batch --shards`) the
same run is spread over workers of a process work pool:

    read source → open manifest → record every request in the ledger
      → billing-shard 1/N ‖ … ‖ billing-shard N/N (deployment runs, children of this one)
      → wait, with progress → report

each shard running its share of the manifest in chunks the same way
(`flows/billing_shard.py`, `invoiceflow.batch.shards`).
"""

from __future__ import annotations

import queue
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from prefect import State, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run, task_run
from prefect.states import Completed, Failed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows import approval
from invoiceflow import lease, progress, story
from invoiceflow.approval import summary as approval_summary
from invoiceflow.batch import chunks, console, dispatch, manifest, report, unit
from invoiceflow.batch import shards as sharding
from invoiceflow.batch import source as source_module
from invoiceflow.batch.outcome import Outcome
from invoiceflow.request import BillingRequest
from invoiceflow.retry import describe
from invoiceflow.runtime import get_runtime
from invoiceflow.settings import get_settings

T = TypeVar("T")
R = TypeVar("R")


def _run_name() -> str:
    run_id = flow_run.parameters.get("run_id")
    return f"billing-run-{run_id or Path(flow_run.parameters.get('source', 'pending')).name}"


@task(
    name="invoice",
    # A template, not `with_options` per request: each with_options built a new
    # Task, which reads the function's source again (~1 % of a billing run's CPU).
    task_run_name="invoice-{request.request_id}",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=0,
)
def invoice_entry(run_id: str, position: int, request: BillingRequest, hold: bool = False) -> str:
    """One request: submitted, taken to sent, its outcome recorded. Never raises for it."""
    owner = lease.new_owner(task_run.id or uuid.uuid4().hex)
    rt = get_runtime()
    result = unit.bill_entry(rt, run_id, position, request, owner, get_run_logger(), hold)
    if result.row is not None:
        story.publish(rt.engine, result.row)
    return result.outcome.value


@task(
    name="bill-chunk",
    task_run_name="{label}",  # `bill requests 1-10` (`invoiceflow.batch.chunks.label`)
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=0,
)
def bill_chunk(
    run_id: str, label: str, entries: Sequence[tuple[int, BillingRequest]], hold: bool = False
) -> list[str | None]:
    """Bill a chunk's requests one after the other; each one's outcome (None: unrecorded).

    A request's failure is its outcome, and the chunk goes on with the next
    one: even an error the unit could not record (the database went away)
    only leaves that entry unfinished in the manifest for a rerun.
    """
    logger = get_run_logger()
    rt = get_runtime()
    this_task = task_run.id or uuid.uuid4().hex
    outcomes: list[str | None] = []
    rows: list[dict[str, str]] = []
    for position, request in entries:
        owner = lease.new_owner(f"{this_task}/{position}")
        try:
            result = unit.bill_entry(rt, run_id, position, request, owner, logger, hold)
        except Exception as exc:
            logger.warning("Request %s: not recorded: %s", request.request_id, describe(exc))
            outcomes.append(None)
            rows.append(report.chunk_row(request, "unfinished", reason=describe(exc)))
            continue
        outcomes.append(result.outcome.value)
        link = result.row.hosted_invoice_url if result.row is not None else None
        rows.append(
            report.chunk_row(request, result.outcome.value, result.invoice, link, result.reason)
        )
    _publish_chunk(run_id, label, rows)
    return outcomes


def _publish_chunk(run_id: str, label: str, rows: list[dict[str, str]]) -> None:
    """The chunk's table artifact, on its task run (no key: a 10,000-request run
    would fill the UI's artifact catalogue with a thousand). Never fails the chunk."""
    try:
        create_table_artifact(
            table=rows, description=f"Billing run {run_id}: {label}, one row per request"
        )
    except Exception as exc:  # the table is for people; the manifest has every outcome
        get_run_logger().warning("Could not publish the table of %s: %s", label, describe(exc))


def bill_entries(
    run_id: str, entries: Sequence[tuple[int, BillingRequest]], hold: bool = False
) -> None:
    """Bill `entries` in chunks on the flow's thread pool (a task per entry with
    INVOICEFLOW_BATCH_CHUNK=1); wait for all.

    Each unit records its entry's outcome in the manifest itself. An entry that
    another run was holding (`busy`: its unit waited only briefly) is tried once
    more after all the others; still busy then, it stays `busy` for a rerun.
    """
    busy = _bill_window(run_id, entries, hold=hold)
    if busy:
        progress.note("%d request(s) held by another run: trying them again", len(busy))
        _bill_window(run_id, busy, again=True, hold=hold)


def _bill_window(
    run_id: str,
    entries: Sequence[tuple[int, BillingRequest]],
    again: bool = False,
    hold: bool = False,
) -> list[tuple[int, BillingRequest]]:
    """Bill `entries` through the window; the ones that ended busy."""
    settings = get_settings()
    if settings.batch_chunk == 1:
        return _bill_each(run_id, entries, hold)
    size = chunks.size(len(entries), settings.batch_workers, settings.batch_chunk)
    submitted: dict[PrefectFuture[list[str | None]], Sequence[tuple[int, BillingRequest]]] = {}

    def submit(chunk: Sequence[tuple[int, BillingRequest]]) -> PrefectFuture[list[str | None]]:
        label = chunks.label([position for position, _ in chunk], again)
        future = bill_chunk.submit(run_id, label, chunk, hold)
        submitted[future] = chunk
        return future

    busy = []
    for done in in_window(submit, chunks.split(entries, size)):
        chunk = submitted.pop(done)
        outcomes = _outcome(done) or [None] * len(chunk)
        busy += [
            entry for entry, outcome in zip(chunk, outcomes, strict=True) if outcome == Outcome.BUSY
        ]
    return busy


def _bill_each(
    run_id: str, entries: Sequence[tuple[int, BillingRequest]], hold: bool = False
) -> list[tuple[int, BillingRequest]]:
    """A task per entry (INVOICEFLOW_BATCH_CHUNK=1); the ones that ended busy."""
    submitted: dict[PrefectFuture[str], tuple[int, BillingRequest]] = {}

    def submit(entry: tuple[int, BillingRequest]) -> PrefectFuture[str]:
        future = invoice_entry.submit(run_id, *entry, hold)
        submitted[future] = entry
        return future

    busy = []
    for done in in_window(submit, entries):
        entry = submitted.pop(done)
        if _outcome(done) == Outcome.BUSY:
            busy.append(entry)
    return busy


def _outcome(future: PrefectFuture[R]) -> R | None:
    try:
        return future.result()
    except Exception:  # not the request's failure (the database?): the manifest shows it unfinished
        return None


def in_window(
    submit: Callable[[T], PrefectFuture[R]], items: Iterable[T]
) -> Iterator[PrefectFuture[R]]:
    """Submit a task per item; yield each future once its task has finished, in the
    order they finish.

    Only a window of twice the pool's threads is submitted at a time, and only
    while the caller takes what this yields: a 10,000-request run that
    submitted every task up front held each one's future and its Prefect
    bookkeeping (about 20 KiB a request) until the end. A slot is freed by
    whichever task finishes first (`wait(FIRST_COMPLETED)`, which Prefect's own
    `wait` lacks), never by the oldest: one slow request (a busy lease, a long
    Stripe retry) does not stall the others behind it.
    """
    window = 2 * get_settings().batch_workers
    # Each future puts itself here when its task ends (from the pool's thread).
    finished: queue.SimpleQueue[PrefectFuture[R]] = queue.SimpleQueue()
    in_flight = 0
    for item in items:
        if in_flight >= window:
            yield _finished(finished.get())
            in_flight -= 1
        submit(item).add_done_callback(finished.put)
        in_flight += 1
    for _ in range(in_flight):
        yield _finished(finished.get())


def _finished(future: PrefectFuture[R]) -> PrefectFuture[R]:
    future.wait()  # its task is over: this only records its final state
    return future


def thread_pool() -> TaskRunner[PrefectFuture[Any]]:
    """Requests of one flow run in flight at once: INVOICEFLOW_BATCH_WORKERS threads."""
    return cast(
        TaskRunner[PrefectFuture[Any]],
        ThreadPoolTaskRunner(max_workers=get_settings().batch_workers),
    )


@flow(
    name="billing-run",
    flow_run_name=_run_name,
    task_runner=thread_pool(),
    retries=0,
    log_prints=False,
)
def billing_run_flow(
    source: str = "pending",
    run_id: str | None = None,
    shards: int | None = None,
    hold: bool = False,
) -> State[report.BatchReport]:
    """Invoice every request of `source` ("pending", a .jsonl/.csv file, or a directory).

    `run_id` names the run's manifest; by default it is derived from the
    source's name and content, so running the same source again resumes it.
    `shards` (default INVOICEFLOW_BATCH_SHARDS): 1 bills here; more spreads the
    run over that many `billing-shard` deployment runs. `hold`: take every request to
    a filled draft and stop, for a person to approve or reject (`invoiceflow.approval`);
    the run publishes what it held (`…-approval`); a deployment run then waits suspended
    in the Prefect UI for the approve/reject form (`flows/approval.py`).

    Ends Completed with the report when every request is invoiced; else Failed,
    its message naming the failed requests (Prefect's "Failed" filter, the
    crashed-runs automation's final events and notifications all know it), with
    `report.RequestsFailed` carrying the report.
    """
    logger = get_run_logger()
    rt = get_runtime()
    if hold and (held_run := approval.held_before()) is not None:
        # The rerun after the approval form was answered: decide, bill nothing again.
        approval.wait_and_decide(rt, held_run, None)
        return _ended(_reported(held_run))
    shard_count = sharding.check_shards(rt.settings.batch_shards if shards is None else shards)
    if shard_count > 1:  # before anything is recorded: a misconfiguration creates nothing
        if hold:
            raise sharding.ShardingError("hold runs in one process for now; drop --shards")
        dispatch.require_deployment()
    read = source_module.read_source(source, rt.engine)
    run_id = manifest.check_run_id(run_id) if run_id else manifest.default_run_id(read)
    console.tag_current_run([])  # trigger:<cli|ui|schedule>, while it runs
    started = manifest.start(rt.engine, run_id, read)
    logger.info(
        "Billing run %s, attempt %d: %d of %d requests to do, %s",
        run_id,
        started.run.attempts,
        len(started.todo),
        len(read.entries),
        f"in {shard_count} shards" if shard_count > 1 else "here",
    )
    if shard_count == 1:
        bill_entries(run_id, _billable(read, started.todo), hold)
    else:
        bill_in_shards(run_id, read, started, shard_count)
    manifest.finish(rt.engine, run_id)
    result = _reported(run_id)
    if hold:
        held = publish_held(run_id)
        if approval.waits_in_ui(held):  # a deployment run: the Prefect UI's form decides
            approval.wait_and_decide(rt, run_id, held)  # suspends: this process ends here
            result = _reported(run_id)
    return _ended(result)


def _reported(run_id: str) -> report.BatchReport:
    """The run's report, from its manifest, published."""
    loaded = manifest.load(get_runtime().engine, run_id)
    assert loaded is not None
    result = report.build(*loaded)
    publish(result)
    return result


def _ended(result: report.BatchReport) -> State[report.BatchReport]:
    """The run's final state, and its tags, from its report."""
    console.tag_current_run(console.reported_tags(result))
    get_run_logger().info("%s", result.lines()[0])
    if result.ok:
        return Completed(message=result.lines()[0], data=result)
    return Failed(message=result.failed_line(), data=report.RequestsFailed(result))


def run_billing(
    source: str = "pending",
    run_id: str | None = None,
    shards: int | None = None,
    hold: bool = False,
) -> report.BatchReport:
    """Run the billing run here and now; its report, whether or not requests failed."""
    try:
        return cast(report.BatchReport, billing_run_flow(source, run_id, shards, hold))
    except report.RequestsFailed as failed:
        return failed.report


def _billable(read: source_module.Source, positions: list[int]) -> list[tuple[int, BillingRequest]]:
    # An entry broken in the source was finished as invalid already: nothing to run.
    entries = [(position, read.entries[position].request) for position in positions]
    return [(position, request) for position, request in entries if request is not None]


def bill_in_shards(
    run_id: str, read: source_module.Source, started: manifest.Started, shards: int
) -> None:
    """Record the requests, start `shards` billing-shard runs, and wait for them all."""
    logger = get_run_logger()
    rt = get_runtime()
    # Intent before Stripe: every request in the shared ledger before any shard starts.
    left = sharding.record_intents(rt.engine, run_id, read, started.todo)
    logger.info("Recorded %d requests for %d shards", left, shards)
    flow_run_ids = dispatch.start_shards(run_id, started.run.attempts, shards)
    ends = dispatch.wait(rt.engine, run_id, len(read.entries), flow_run_ids, logger.info)
    for end in ends:
        if not end.completed:
            progress.note(
                "shard %d/%d (flow run %s) ended %s: its unfinished entries wait for a rerun",
                end.shard + 1,
                shards,
                end.flow_run_id,
                end.state,
            )


def publish(result: report.BatchReport) -> None:
    """The run's report in the Prefect UI: a table (counts, failures) and a summary."""
    key = manifest.artifact_key(result.run_id)
    create_table_artifact(
        table=result.table(),
        key=key,
        description=f"Billing run {result.run_id}: counts by outcome, then each failure",
    )
    create_markdown_artifact(
        markdown=result.markdown(), key=f"{key}-summary", description=result.lines()[0]
    )


def publish_held(run_id: str) -> approval_summary.HeldSummary:
    """What the run held, for the person who approves it: counts, totals per currency,
    new customers, the largest drafts, failures, and the commands that decide."""
    held = approval_summary.summarize(get_runtime(), run_id)
    create_markdown_artifact(
        markdown=held.markdown(),
        key=f"{manifest.artifact_key(run_id)}-approval",
        description=held.lines()[0],
    )
    return held
