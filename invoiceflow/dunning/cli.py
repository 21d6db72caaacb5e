"""`invoiceflow dunning [--as-of …]`: take the dunning steps that are due.

Prints one line per step taken (`R1: reminder-2 sent for in_…, 8 days overdue`),
then a summary. Exit 0 unless a request's unit failed: then the code of the
first failure (`invoiceflow.outcomes.Exit`), with the reason on stderr.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

AS_OF_HINT = "use an ISO 8601 time such as 2026-12-31T00:00:00Z (no zone: UTC)"


def register(app: typer.Typer) -> None:
    app.command("dunning")(dunning)


def parse_as_of(text: str) -> datetime:
    """`--as-of` as an aware UTC time; ValueError with the fix when it is not one."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--as-of {text!r} is not a time; {AS_OF_HINT}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def dunning(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Act as of this time (default: now)."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the run's log lines as they happen.")
    ] = False,
) -> None:
    """Send the reminders that are due for overdue invoices, and write off the ones past grace."""
    from invoiceflow.cli_common import database_errors, fail
    from invoiceflow.outcomes import Exit, classify
    from invoiceflow.settings import SettingsError, get_settings

    try:
        when = parse_as_of(as_of) if as_of is not None else None
        get_settings().require_stripe_key()
    except (ValueError, SettingsError) as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None

    from invoiceflow import progress
    from invoiceflow.prefect_env import configure_prefect

    configure_prefect(quiet_console=not verbose)
    if not verbose:
        progress.print_to_stderr()
    from flows.dunning import run_dunning
    from invoiceflow.retry import describe

    try:
        with database_errors():
            report = run_dunning(when)
    except typer.Exit:
        raise
    except Exception as exc:
        raise fail(classify(exc), f"dunning: {describe(exc)}") from None
    for line in report.taken():
        typer.echo(line.one_line())
    typer.echo(report.summary())
    failures = report.failures
    if failures:
        first = failures[0]
        raise fail(
            Exit(first.exit_code or Exit.UNEXPECTED),
            f"{len(failures)} request(s) failed, first {first.request_id}: {first.reason}; "
            "rerun `invoiceflow dunning` to retry them",
        )
