"""`invoiceflow reconcile [--since 2026-11-01|7d] [--stale-minutes N]`."""

from __future__ import annotations

import math
from typing import Annotated

import typer

from invoiceflow.outcomes import Exit

HELP = """Bring our ledger in line with Stripe: apply what webhooks missed, finish
stuck requests, report drift it cannot repair.

Prints one line per change, `drift: …` per difference left alone, `failed: …`
per stuck request it could not finish, then a summary (or "nothing to
change"). Progress notes go to stderr.

Exit codes: 0 in line with Stripe (or made so); 2 bad input; 4 drift found —
someone must look at it in Stripe; 5 a stuck request still failed on something
temporary, or Stripe/the database could not be reached: run it again later.
"""

SINCE_HELP = "Sweep from here instead of the event cursor: 2026-11-01, or an age like 7d or 12h."
STALE_HELP = "Minutes a request below 'sent' must sit untouched before it is finished here."


def register(app: typer.Typer) -> None:
    app.command(name="reconcile", help=HELP)(reconcile_command)


def reconcile_command(
    since: Annotated[str | None, typer.Option("--since", help=SINCE_HELP)] = None,
    stale_minutes: Annotated[float, typer.Option("--stale-minutes", help=STALE_HELP)] = 10.0,
) -> None:
    from invoiceflow.cli_common import database_errors, fail
    from invoiceflow.reconcile.window import BadSince, parse_since
    from invoiceflow.settings import SettingsError, get_settings

    if not 0 <= stale_minutes < math.inf:
        raise fail(Exit.BAD_INPUT, "--stale-minutes must be 0 or more minutes")
    try:
        since_at = parse_since(since) if since is not None else None
        get_settings().require_stripe_key()
    except (BadSince, SettingsError) as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None

    from invoiceflow.prefect_env import configure_prefect

    configure_prefect(quiet_console=True)
    from prefect.settings import get_current_settings

    from invoiceflow import progress

    progress.print_to_stderr()
    if not get_current_settings().api.url:
        progress.note(
            "starting Prefect's temporary local server (about 10 s; "
            "set PREFECT_API_URL to use a running one)"
        )
    from flows.reconcile import reconcile_flow
    from invoiceflow.outcomes import classify
    from invoiceflow.retry import describe

    try:
        with database_errors():
            report = reconcile_flow(since=since_at, stale_minutes=stale_minutes)
    except typer.Exit:
        raise
    except Exception as exc:
        raise fail(classify(exc), f"reconcile: {describe(exc)}") from None
    for line in report.changes:
        typer.echo(line)
    for line in report.drift:
        typer.echo(f"drift: {line}")
    for line in report.failures:
        typer.echo(f"failed: {line}")
    for line in report.notes:
        typer.echo(f"note: {line}", err=True)
    typer.echo(report.summary())
    if report.drift:
        raise typer.Exit(int(Exit.REFUSED))
    if report.failures:
        raise typer.Exit(int(Exit.TEMPORARY))
