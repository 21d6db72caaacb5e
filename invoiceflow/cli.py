"""The `invoiceflow` command line.

\b
Exit codes (stable, for scripts and schedulers):
  0  the invoice is sent (or paid)
  1  unexpected error
  2  bad input or configuration
  3  request_id already used for other content
  4  Stripe refused it for good (card, validation, an invoice that doesn't
     match)
  5  temporary failure: retries ran out, or Stripe, Prefect's API or the
     database is unreachable; run it again later
  6  another run is processing this request right now
  7  `batch`: the run finished and some requests failed (each named, with its
     reason)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from invoiceflow.cli_common import HELP_SETTINGS, database_errors, fail
from invoiceflow.outcomes import Exit, classify

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from invoiceflow.amend.versions import Link
    from invoiceflow.db.models import BillingRequestRow as BillingRow
    from invoiceflow.request import BillingRequest
    from invoiceflow.settings import Settings
    from invoiceflow.status import RequestStatus

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
)
db_app = typer.Typer(
    no_args_is_help=True,
    help="Database schema.",
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
)
app.add_typer(db_app, name="db")


@app.command()
def invoice(
    request_file: Annotated[Path, typer.Argument(help="Billing request, JSON or YAML.")],
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Stop once sent.")] = False,
    await_seconds: Annotated[
        float | None, typer.Option(help="How long to await payment (default from settings).")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the run's log lines as they happen.")
    ] = False,
) -> None:
    """Run one billing request through the invoice flow.

    Prints one line: the outcome, or `error: <reason>`. The run's full log is in
    Prefect (the UI, or `--verbose` here).
    """
    from invoiceflow.request import RequestError, load_request
    from invoiceflow.settings import SettingsError, get_settings

    if await_seconds is not None and not 0 <= await_seconds < math.inf:
        raise fail(Exit.BAD_INPUT, "--await-seconds must be 0 or more seconds (0: don't wait)")
    try:
        request = load_request(request_file)
        settings = get_settings()
        settings.require_stripe_key()
    except (RequestError, SettingsError) as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None

    from invoiceflow import ledger
    from invoiceflow.runtime import get_runtime

    try:  # a conflicting resubmission is refused before any flow run exists
        with database_errors():
            engine = get_runtime().engine
            submitted = ledger.submit(engine, request)
    except ledger.RequestConflict as exc:
        raise fail(Exit.CONFLICT, str(exc)) from None

    from invoiceflow.interrupt import InterruptGuard

    try:
        # Ctrl-C in here: one line naming the recovery point, exit 130, in seconds.
        with InterruptGuard(engine, request.request_id, submitted.recovery_point):
            status = _run_flow(
                request, no_wait=no_wait, await_seconds=await_seconds, verbose=verbose
            )
    except Exception as exc:
        from invoiceflow.retry import describe

        raise fail(classify(exc), f"{request.request_id}: {describe(exc)}") from None
    typer.echo(status.one_line())
    raise typer.Exit(int(Exit.OK if status.delivered else Exit.UNEXPECTED))


def _run_flow(
    request: BillingRequest, *, no_wait: bool, await_seconds: float | None, verbose: bool
) -> RequestStatus:
    from invoiceflow.prefect_env import configure_prefect

    configure_prefect(quiet_console=not verbose)
    from prefect.settings import get_current_settings

    from invoiceflow import progress

    if not verbose:  # -v shows them with the rest of the run's log
        progress.print_to_stderr()  # no silent waits: leases, Stripe retries, payment
    if not get_current_settings().api.url:
        progress.note(
            "starting Prefect's temporary local server (about 10 s; "
            "set PREFECT_API_URL to use a running one)"
        )
    from invoiceflow.prefect_reach import require_reachable

    # One line and exit 5 now, not Prefect's client retrying into a traceback.
    require_reachable(get_current_settings().api.url)
    from flows.invoice import run_invoice

    status = run_invoice(request)
    if no_wait or status.state.is_terminal:
        return status
    # The run is over (no worker waits for a payment); the payment arrives as a
    # signed webhook that the receiver records, so watch our database for it.
    from invoiceflow import awaiting
    from invoiceflow.runtime import get_runtime
    from invoiceflow.status import RequestStatus

    rt = get_runtime()
    timeout = rt.settings.await_paid_seconds if await_seconds is None else await_seconds
    row = awaiting.until_settled(rt.engine, request.request_id, timeout)
    if row.point.is_terminal or row.payment_pending_since is not None:
        _tell_ending(rt.engine, request.request_id)
    return RequestStatus.from_row(row)


def _tell_ending(engine: Engine, request_id: str) -> None:
    """The run ended `AwaitingPayment` before the payment came: its state and story
    say where the invoice is now (no serve may be running to tell it). For people
    only: a failure is one warning, never the command's outcome."""
    from prefect.client.orchestration import get_client

    from invoiceflow import endings, progress

    try:
        with get_client(sync_client=True) as client:
            endings.tell(client, engine, [request_id])
    except Exception as exc:
        progress.log.warning("could not tell %s's ending in Prefect: %s", request_id, exc)


@app.command()
def status(
    request_id: Annotated[str | None, typer.Argument(help="One request; all when omitted.")] = None,
    state: Annotated[
        list[str] | None,
        typer.Option("--state", help="Only requests in this state (repeatable), e.g. sent."),
    ] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's requests.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this billing run's.")] = None,
    overdue: Annotated[
        bool, typer.Option("--overdue", help="Only sent invoices past their due date.")
    ] = False,
    totals: Annotated[bool, typer.Option("--totals", help="Only the totals per currency.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show each request's state, Stripe invoice, amount, due date and days overdue,
    then the totals per currency (billed, paid, outstanding, overdue)."""
    from sqlalchemy.engine import make_url

    from invoiceflow import ledger
    from invoiceflow.db.engine import get_engine
    from invoiceflow.db.models import RecoveryPoint
    from invoiceflow.settings import SettingsError, get_settings
    from invoiceflow.status import RequestStatus, totals_by_currency

    try:
        database_url = get_settings().database_url
        states = [RecoveryPoint(value.strip().lower()) for value in state or []]
    except SettingsError as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    except ValueError:
        known = ", ".join(point.value for point in RecoveryPoint)
        raise fail(Exit.BAD_INPUT, f"--state must be one of {known}") from None
    if overdue:
        states = [*states, RecoveryPoint.SENT]
    with database_errors():
        engine = get_engine(database_url)
        if run is not None and not ledger.billing_run_exists(engine, run):
            raise fail(Exit.BAD_INPUT, f"no billing run {run!r}; `invoiceflow batch` names its run")
        rows = (
            [ledger.load(engine, request_id)]
            if request_id is not None
            else list(ledger.list_requests(engine, states=states, customer=customer, run_id=run))
        )
    # Which ledger this is, on stderr (stdout stays the report, or pure JSON).
    shown = make_url(database_url).render_as_string(hide_password=True)
    typer.echo(f"database: {shown}", err=True)
    if rows == [None]:
        raise fail(Exit.BAD_INPUT, f"no request {request_id!r}")
    statuses = [RequestStatus.from_row(row) for row in rows if row is not None]
    if overdue:
        statuses = [one for one in statuses if one.days_overdue is not None]
    sums = totals_by_currency(statuses)
    chains = _amended_chains(engine, [row for row in rows if row is not None])
    if as_json:
        if totals:
            payload: object = [one.model_dump(mode="json") for one in sums]
        elif request_id:
            payload = _with_chain(statuses[0], chains)
        else:
            payload = [_with_chain(one, chains) for one in statuses]
        typer.echo(json.dumps(payload, indent=2))
        return
    if not statuses:
        typer.echo("no requests yet" if not (states or customer or run) else "no requests match")
        return
    if not totals:
        for one in statuses:
            typer.echo(one.one_line())
            for link in chains.get(one.request_id, []):  # an amended request's versions
                typer.echo(f"  {link.words()}")
    if totals or request_id is None:  # one request listed has totals too: they must agree
        for line in sums:
            typer.echo(f"total {line.one_line()}")


def _amended_chains(engine: Engine, rows: list[BillingRow]) -> dict[str, list[Link]]:
    from invoiceflow.amend.versions import links_by_request

    with database_errors():
        return links_by_request(engine, rows)


def _with_chain(status: RequestStatus, chains: dict[str, list[Link]]) -> dict[str, object]:
    """The status as JSON, with `versions` (version, invoice, number, state) if amended."""
    from dataclasses import asdict

    payload = status.model_dump(mode="json")
    if status.request_id in chains:
        payload["versions"] = [asdict(link) for link in chains[status.request_id]]
    return payload


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema (also done automatically on first use)."""
    from invoiceflow.db.engine import make_engine
    from invoiceflow.db.migrate import current_revision, upgrade
    from invoiceflow.settings import SettingsError, get_settings

    try:
        engine = make_engine(get_settings().database_url)
    except SettingsError as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    with database_errors():
        upgrade(engine)
        revision = current_revision(engine)
    typer.echo(f"schema at revision {revision}")


@app.command()
def demo() -> None:
    """Run realistic requests end to end against an in-process Stripe sandbox. Needs no setup."""
    from invoiceflow.demo import run_demo
    from invoiceflow.sandbox_command import NOT_INSTALLED, sandbox_missing
    from invoiceflow.settings import SettingsError

    try:  # the demo brings its own key, sandbox and database; the rest is the environment's
        code = run_demo()
    except SettingsError as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    except ModuleNotFoundError as exc:
        if not sandbox_missing(exc):
            raise
        raise fail(Exit.BAD_INPUT, NOT_INSTALLED) from None
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address of the HTTP endpoints.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the HTTP endpoints.")] = 8080,
) -> None:
    """Serve the deployments, POST /invoices and POST /webhooks/stripe, until SIGINT/SIGTERM.

    Needs a real Prefect server (PREFECT_API_URL), STRIPE_API_KEY,
    INVOICEFLOW_TRIGGER_TOKEN and STRIPE_WEBHOOK_SECRET. Flow runs execute in
    subprocesses of this one; a sweeper tells each payment's ending in the
    Prefect UI (the invoice run's state, its story) without a run of its own.
    """
    import asyncio

    from invoiceflow.prefect_env import configure_prefect
    from invoiceflow.settings import SettingsError, get_settings

    if not 0 <= port <= 65535:  # before Prefect's imports: a typo answers at once
        raise fail(Exit.BAD_INPUT, f"--port must be 0-65535, got {port}")
    configure_prefect()
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        raise fail(
            Exit.BAD_INPUT,
            "PREFECT_API_URL is not set; start a server with "
            "'prefect --no-prompt server start' and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api (a temporary server would "
            "lose the deployments and their runs when this process stops)",
        )
    try:
        settings = get_settings()
        settings.require_stripe_key()
        settings.require_trigger_token()
        settings.require_webhook_secrets()  # payments arrive only as signed events
    except SettingsError as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None

    from invoiceflow.db.engine import get_engine
    from invoiceflow.service.app import build_app
    from invoiceflow.service.run import bind
    from invoiceflow.service.run import serve as run_service

    try:
        sock = bind(host, port)
    except OSError as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    bound_host, bound_port = sock.getsockname()[:2]

    def ready() -> None:
        base = f"http://{bound_host}:{bound_port}"
        typer.echo(
            f"serving deployment invoice/invoice; "
            f"POST {base}/invoices, POST {base}/webhooks/stripe",
            err=True,
        )
        typer.echo(f"schedules ({settings.schedule_timezone}): {_cycle(settings)}", err=True)

    from invoiceflow.prefect_reach import is_prefect_unreachable, one_line, require_reachable

    api_url = get_current_settings().api.url
    with sock, database_errors():
        engine = get_engine(settings.database_url)
        try:
            require_reachable(api_url)
            asyncio.run(run_service(build_app(settings), sock, ready, engine))
        except Exception as exc:  # Prefect's API down, at start or while serving: exit 5
            if not is_prefect_unreachable(exc):
                raise
            raise fail(Exit.TEMPORARY, one_line(api_url, exc)) from None


def _cycle(settings: Settings) -> str:
    crons = {
        "billing-run": settings.billing_cron,
        "dunning": settings.dunning_cron,
        "reconcile": settings.reconcile_cron,
    }
    return ", ".join(f"{name} {cron!r}" for name, cron in crons.items())


@app.command()
def automations() -> None:
    """Create or update the automation that marks dead flow runs Crashed, and the ones that
    notify INVOICEFLOW_NOTIFY_BLOCK (a billing run failed, a held run waits too long).

    `serve` does this at start; run it once when deploying with `prefect deploy`.
    Needs PREFECT_API_URL.
    """
    import asyncio

    from invoiceflow.prefect_env import configure_prefect

    configure_prefect()
    from invoiceflow.service.automations import CRASHED_RUNS_AUTOMATION, crash_window
    from invoiceflow.service.automations import ensure_crashed_runs_automation as ensure

    automation_id = asyncio.run(ensure())
    if automation_id is None:
        raise fail(Exit.BAD_INPUT, "flow heartbeats are off (PREFECT_FLOWS_HEARTBEAT_FREQUENCY)")
    window = crash_window()
    seconds = int(window.total_seconds()) if window else 0
    typer.echo(
        f"automation {CRASHED_RUNS_AUTOMATION} ({automation_id}): runs silent {seconds} s → Crashed"
    )
    _notifications()


def _notifications() -> None:
    """The automations that notify INVOICEFLOW_NOTIFY_BLOCK (`invoiceflow.service.notify`)."""
    import asyncio

    from invoiceflow.service.notify import NotifyBlockMissing, ensure_notifications
    from invoiceflow.settings import SettingsError, get_settings

    try:
        settings = get_settings()
    except SettingsError as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    try:
        installed = asyncio.run(ensure_notifications(settings))
    except NotifyBlockMissing as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    if not installed:
        typer.echo("notifications: off (set INVOICEFLOW_NOTIFY_BLOCK to a Prefect block)")
    for name, automation_id in installed.items():
        typer.echo(f"automation {name} ({automation_id}): notifies {settings.notify_block}")


def _register_subcommands() -> None:
    from invoiceflow.amend.cli import register as register_amend
    from invoiceflow.approval.cli import register as register_approval
    from invoiceflow.batch.cli import register as register_batch
    from invoiceflow.dunning.cli import register as register_dunning
    from invoiceflow.reconcile.cli import register as register_reconcile
    from invoiceflow.resolve_cli import register as register_invoice_controls
    from invoiceflow.sandbox_command import register as register_sandbox

    register_sandbox(app)
    register_batch(app)
    register_approval(app)
    register_dunning(app)
    register_reconcile(app)
    register_invoice_controls(app)
    register_amend(app)


_register_subcommands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
