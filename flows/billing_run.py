"""The billing run: every request of a source, each its own unit of work.

    read source → open manifest (new, or resume) ─┬─ invoice-<request 1> ─┐
                                                   ├─ invoice-<request 2> ─┼─ report
                                                   └─ …                    ┘

One Prefect task per request, on a thread pool of INVOICEFLOW_BATCH_WORKERS:
never a flow run or subflow per request (each costs up to a second of
heartbeat join), and each task runs the request's steps as plain calls (a task
per step would cost as much again). A unit records its own outcome in the
manifest, so one bad request never stops the others and a rerun — after a
crash, or to retry what failed for a while — resumes only what did not finish.

The parameters are references (a path, "pending", a run id), never the
requests themselves: Prefect refuses parameters over 512 KiB.

With `shards` > 1 (INVOICEFLOW_BATCH_SHARDS, `invoiceflow batch --shards`) the
same run is spread over workers of a process work pool:

    read source → open manifest → record every request in the ledger
      → billing-shard 1/N ‖ … ‖ billing-shard N/N (deployment runs, children of this one)
      → wait, with progress → report

each shard running its share of the manifest with the same per-request tasks
(`flows/billing_shard.py`, `invoiceflow.batch.shards`).
"""

from __future__ import annotations

import queue
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run, task_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from invoiceflow import lease, progress, story
from invoiceflow.batch import dispatch, manifest, report, unit
from invoiceflow.batch import shards as sharding
from invoiceflow.batch import source as source_module
from invoiceflow.batch.outcome import Outcome
from invoiceflow.request import BillingRequest
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
def invoice_entry(run_id: str, position: int, request: BillingRequest) -> str:
    """One request: submitted, taken to sent, its outcome recorded. Never raises for it."""
    owner = lease.new_owner(task_run.id or uuid.uuid4().hex)
    rt = get_runtime()
    result = unit.bill_entry(rt, run_id, position, request, owner, get_run_logger())
    if result.row is not None:
        story.publish(rt.engine, result.row)
    return result.outcome.value


def bill_entries(run_id: str, entries: Iterable[tuple[int, BillingRequest]]) -> None:
    """One `invoice-<request id>` task per entry on the flow's thread pool; wait for all.

    Each task records its entry's outcome in the manifest itself. An entry that
    another run was holding (`busy`: its unit waited only briefly) is tried once
    more after all the others; still busy then, it stays `busy` for a rerun.
    """
    busy = _bill_window(run_id, entries)
    if busy:
        progress.note("%d request(s) held by another run: trying them again", len(busy))
        _bill_window(run_id, busy)


def _bill_window(
    run_id: str, entries: Iterable[tuple[int, BillingRequest]]
) -> list[tuple[int, BillingRequest]]:
    """Bill `entries` through the window; the ones that ended busy."""
    submitted: dict[PrefectFuture[str], tuple[int, BillingRequest]] = {}

    def submit(entry: tuple[int, BillingRequest]) -> PrefectFuture[str]:
        future = invoice_entry.submit(run_id, *entry)
        submitted[future] = entry
        return future

    busy = []
    for done in in_window(submit, entries):
        entry = submitted.pop(done)
        if _outcome(done) == Outcome.BUSY:
            busy.append(entry)
    return busy


def _outcome(future: PrefectFuture[str]) -> str | None:
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
    source: str = "pending", run_id: str | None = None, shards: int | None = None
) -> report.BatchReport:
    """Invoice every request of `source` ("pending", a .jsonl/.csv file, or a directory).

    `run_id` names the run's manifest; by default it is derived from the
    source's name and content, so running the same source again resumes it.
    `shards` (default INVOICEFLOW_BATCH_SHARDS): 1 bills here; more spreads the
    run over that many `billing-shard` deployment runs.
    """
    logger = get_run_logger()
    rt = get_runtime()
    shard_count = sharding.check_shards(rt.settings.batch_shards if shards is None else shards)
    if shard_count > 1:  # before anything is recorded: a misconfiguration creates nothing
        dispatch.require_deployment()
    read = source_module.read_source(source, rt.engine)
    run_id = manifest.check_run_id(run_id) if run_id else manifest.default_run_id(read)
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
        bill_entries(run_id, _billable(read, started.todo))
    else:
        bill_in_shards(run_id, read, started, shard_count)
    manifest.finish(rt.engine, run_id)
    loaded = manifest.load(rt.engine, run_id)
    assert loaded is not None
    result = report.build(*loaded)
    publish(result)
    logger.info("%s", result.lines()[0])
    return result


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
