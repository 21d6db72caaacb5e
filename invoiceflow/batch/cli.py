"""`invoiceflow batch SOURCE`: run a billing run here, with progress, and report it.

stdout is the report (counts by outcome, totals by currency, one line per
failed request with its reason); progress and notes go to stderr. Exit 0 when
every request is invoiced, 7 (`Exit.SOME_FAILED`) when any failed, 2 for a
source that cannot be billed at all (nothing is created then), 130 on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from invoiceflow.outcomes import Exit

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from invoiceflow.batch.report import BatchReport
    from invoiceflow.batch.source import Source

# Without a terminal (a scheduler, CI, a pipe), a progress line this often.
PLAIN_PROGRESS_EVERY_SECONDS = 5.0
# How often the progress display reads the manifest.
POLL_SECONDS = 0.5
# On Ctrl-C: how long releasing this process's leases may take before we leave anyway.
INTERRUPT_CLEANUP_SECONDS = 5.0


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)
    app.command("submit")(submit)


def submit(
    source: Annotated[
        str,
        typer.Argument(help="A .jsonl or .csv file, or a directory of .json/.yaml request files."),
    ],
) -> None:
    """Record SOURCE's requests for the next billing run (`batch pending`), without
    invoicing them now; all of them, or none if any is invalid or conflicting."""
    from invoiceflow.batch.source import PENDING, SourceError, read_source
    from invoiceflow.batch.submit import SubmitRefused, submit_source
    from invoiceflow.cli_common import database_errors, fail
    from invoiceflow.runtime import get_runtime
    from invoiceflow.settings import SettingsError

    try:
        if source == PENDING:
            raise SourceError("'pending' is what submit records into; give a file or directory")
        read = _billable(read_source(source), source)
    except (SettingsError, SourceError) as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    try:
        with database_errors():
            done = submit_source(get_runtime().engine, read)
    except SubmitRefused as exc:
        code = Exit.CONFLICT if exc.conflict else Exit.BAD_INPUT
        raise fail(code, f"nothing recorded: {exc}") from None
    typer.echo(
        f"recorded {done.recorded} request(s) for the next billing run"
        + (f" ({done.already} were already recorded)" if done.already else "")
        + "; `invoiceflow batch pending` bills them now"
    )


def batch(
    source: Annotated[
        str,
        typer.Argument(
            help="A .jsonl or .csv file, a directory of .json/.yaml request files, or "
            "'pending' (requests recorded but not sent yet)."
        ),
    ],
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id", help="Name of the run's manifest (default: from the source's content)."
        ),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            help="Spread the run over N `billing-shard` deployment runs on the work pool's "
            "workers (default INVOICEFLOW_BATCH_SHARDS, 1 = bill in this process).",
        ),
    ] = None,
    hold: Annotated[
        bool,
        typer.Option(
            "--hold",
            help="Stop every request at a filled draft, for `invoiceflow approve RUN` "
            "(or `reject RUN`); nothing is finalized or sent.",
        ),
    ] = False,
) -> None:
    """Invoice every request of SOURCE, each on its own; a rerun resumes what did not finish."""
    from invoiceflow.batch import manifest
    from invoiceflow.batch.shards import ShardingError, check_shards
    from invoiceflow.batch.source import PENDING, SourceError, read_source
    from invoiceflow.cli_common import database_errors, fail
    from invoiceflow.runtime import get_runtime
    from invoiceflow.settings import SettingsError, get_settings

    try:
        get_settings().require_stripe_key()
        shards = check_shards(get_settings().batch_shards if shards is None else shards)
        if run_id is not None:
            manifest.check_run_id(run_id)
        # A file source is checked before the database is touched: a bad one creates nothing.
        read = None if source == PENDING else _billable(read_source(source), source)
    except (SettingsError, SourceError, manifest.ManifestError, ShardingError) as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    with database_errors():
        engine = get_runtime().engine
        try:
            read = read or _billable(read_source(source, engine), source)
            run_id = run_id or manifest.default_run_id(read)
            # The same source with corrected rows resumes its run (`manifest._rebuilt`).
            total = manifest.check_resumable(engine, run_id, read)
        except manifest.ManifestConflict as exc:
            raise fail(Exit.CONFLICT, str(exc)) from None
        except (SourceError, manifest.ManifestError) as exc:
            raise fail(Exit.BAD_INPUT, str(exc)) from None

    rerun = f"invoiceflow batch {source} --run-id {run_id}"
    if shards > 1:
        rerun += f" --shards {shards}"
    with (
        _on_interrupt(engine, run_id, rerun, shards > 1),
        _progress(engine, run_id, total),
    ):
        result = _run(read, run_id, shards, hold)
    for line in result.lines():
        typer.echo(line)
    if hold:
        _tell_held(engine, run_id)
    if result.ok:
        raise typer.Exit(int(Exit.OK))
    failed = [f.request_id or f"entry {f.position}" for f in result.failures]
    unfinished = result.counts.get("unfinished", 0)
    summary = f"{len(failed)} of {result.total} requests failed"
    if unfinished:
        summary += f", {unfinished} did not finish"
    named = f" ({', '.join(failed[:10])}{', …' if len(failed) > 10 else ''})" if failed else ""
    raise fail(Exit.SOME_FAILED, f"{summary}{named}; fix them, then rerun `{rerun}`")


def _billable(read: Source, given: str) -> Source:
    from invoiceflow.batch.source import SourceError

    if not read.entries:
        raise SourceError(f"source {given!r} holds no requests; nothing to bill")
    return read


def _tell_held(engine: Engine, run_id: str) -> None:
    """What was held and how to decide; a held run's failures still exit 7 below."""
    from invoiceflow.approval.summary import approve_command, reject_command, summarize
    from invoiceflow.runtime import get_runtime

    for line in summarize(get_runtime(), run_id).lines()[1:]:
        typer.echo(line)
    typer.echo(
        f"billing run {run_id} is held: `{approve_command(run_id)}` finalizes and sends "
        f"the drafts, `{reject_command(run_id)}` deletes them"
    )


def _run(read: Source, run_id: str, shards: int, hold: bool = False) -> BatchReport:
    from invoiceflow import progress
    from invoiceflow.batch.shards import ShardingError
    from invoiceflow.cli_common import fail
    from invoiceflow.prefect_env import configure_prefect
    from invoiceflow.retry import describe

    configure_prefect(quiet_console=True)
    from prefect.settings import get_current_settings

    progress.print_to_stderr()  # no silent waits: leases, Stripe retries
    if not get_current_settings().api.url:
        progress.note(
            "starting Prefect's temporary local server (about 10 s; "
            "set PREFECT_API_URL to use a running one)"
        )
    from flows.billing_run import run_billing
    from invoiceflow.outcomes import classify

    try:
        return run_billing(source=read.name, run_id=run_id, shards=shards, hold=hold)
    except ShardingError as exc:  # no shard deployment to start: configuration, nothing billed
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    except Exception as exc:  # the run itself failed (database gone): say so in one line
        raise fail(classify(exc), f"billing run {run_id}: {describe(exc)}") from None


@contextmanager
def _progress(engine: Engine, run_id: str, total: int) -> Iterator[None]:
    """A Rich progress bar on a terminal, else a line every few seconds, from the manifest."""
    stop = threading.Event()
    show = _bar if sys.stderr.isatty() else _lines
    thread = threading.Thread(
        target=show, args=(engine, run_id, total, stop), name="batch-progress", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _counts(engine: Engine, run_id: str) -> tuple[int, int]:
    from invoiceflow.batch import manifest

    try:
        return manifest.finished_count(engine, run_id)
    except Exception:  # a busy database: show the last numbers, try again next tick
        return -1, -1


def _bar(engine: Engine, run_id: str, total: int, stop: threading.Event) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("billing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        job = bar.add_task("billing", total=total, note="")
        while True:
            done, failed = _counts(engine, run_id)
            if done >= 0:
                bar.update(job, completed=done, note=f"{failed} failed" if failed else "")
            if stop.wait(POLL_SECONDS):
                break


def _lines(engine: Engine, run_id: str, total: int, stop: threading.Event) -> None:
    while not stop.wait(PLAIN_PROGRESS_EVERY_SECONDS):
        done, failed = _counts(engine, run_id)
        if done >= 0:
            sys.stderr.write(f"… billed {done}/{total} ({failed} failed)\n")
            sys.stderr.flush()


@contextmanager
def _on_interrupt(engine: Engine, run_id: str, rerun: str, sharded: bool) -> Iterator[None]:
    """Ctrl-C: one line saying how to resume, exit 130 within seconds.

    Prefect's unwinding of dozens of task runs against a temporary server
    that the same Ctrl-C stopped takes minutes (see `invoiceflow.interrupt`),
    so we leave at once; the manifest and the ledger already say where every
    request stands, and the rerun resumes from there.
    """
    import signal

    def leave(_signum: int, _frame: object) -> None:
        os.write(2, f"\ninterrupted; rerun `{rerun}` to resume\n".encode())
        finisher = threading.Thread(
            target=_release_leases, args=(engine, run_id, sharded), daemon=True
        )
        finisher.start()
        finisher.join(INTERRUPT_CLEANUP_SECONDS)
        os._exit(130)

    previous = signal.signal(signal.SIGINT, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _release_leases(engine: Engine, run_id: str, sharded: bool) -> None:
    """Free the requests this process was working on now, not after their lease lapses;
    cancel the run's shards on the workers (a sharded run)."""
    from invoiceflow import lease, ledger
    from invoiceflow.batch import dispatch, manifest
    from invoiceflow.interrupt import stop_temporary_server

    # The database may be down too; then the leases lapse on their own.
    with contextlib.suppress(Exception):
        loaded = manifest.load(engine, run_id)
        for item in loaded[1] if loaded else []:
            if item.outcome is None and item.request_id:
                row = ledger.load(engine, item.request_id)
                if row is not None and lease.held_by_this_process(row.lease_owner):
                    ledger.release_lease(engine, item.request_id, str(row.lease_owner))
    if sharded:
        with contextlib.suppress(Exception):  # Prefect may be gone too: the rerun copes
            dispatch.cancel_shards(run_id)
    stop_temporary_server()
