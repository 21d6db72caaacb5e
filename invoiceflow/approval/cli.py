"""`invoiceflow approve RUN` and `invoiceflow reject RUN --reason TEXT`: decide a held run.

stdout: one line per request decided, then a summary, then a line per flow run that
waited in the Prefect UI for this decision and is now cancelled (`approval.waiting`).
Exit 0 when every held request is decided (now or by an earlier run of the command: a rerun is safe
and makes no Stripe write), 7 when some failed (rerun to resume them), 2 for a
run that does not exist or holds nothing, 3 for one decided the other way.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from invoiceflow.outcomes import Exit

if TYPE_CHECKING:
    from invoiceflow.approval.decide import Decision
    from invoiceflow.runtime import Runtime

BY_HELP = "Who decides, for the audit log (default: the OS user)."


def register(app: typer.Typer) -> None:
    app.command("approve")(approve)
    app.command("reject")(reject)


def approve(
    run_id: Annotated[str, typer.Argument(help="The held billing run (`batch --hold` named it).")],
    by: Annotated[str | None, typer.Option("--by", help=BY_HELP)] = None,
) -> None:
    """Finalize and send every draft a held billing run made, each exactly once."""
    from invoiceflow.approval import decide

    who = _who(by)
    _decide(lambda rt: decide.approve(rt, run_id, who), run_id, "approved", "sent", who)


def reject(
    run_id: Annotated[str, typer.Argument(help="The held billing run (`batch --hold` named it).")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log (required).")],
    by: Annotated[str | None, typer.Option("--by", help=BY_HELP)] = None,
) -> None:
    """Delete every draft a held billing run made, and mark its requests rejected."""
    from invoiceflow.approval import decide
    from invoiceflow.cli_common import fail

    if not reason.strip():
        raise fail(Exit.BAD_INPUT, "--reason must say why the run is rejected")
    who = _who(by)
    _decide(
        lambda rt: decide.reject(rt, run_id, who, reason.strip()),
        run_id,
        "rejected",
        "draft deleted",
        who,
    )


def _who(by: str | None) -> str:
    return by.strip() if by and by.strip() else getpass.getuser()


def _decide(
    decide: Callable[[Runtime], Decision], run_id: str, verb: str, what: str, by_whom: str
) -> None:
    from invoiceflow import progress
    from invoiceflow.approval.decide import DecidedOtherwise, DecisionRefused
    from invoiceflow.cli_common import database_errors, fail
    from invoiceflow.runtime import get_runtime
    from invoiceflow.settings import SettingsError, get_settings

    try:
        get_settings().require_stripe_key()
    except SettingsError as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    progress.print_to_stderr()
    with database_errors():
        try:
            decision = decide(get_runtime())
        except DecidedOtherwise as exc:
            raise fail(Exit.CONFLICT, str(exc)) from None
        except DecisionRefused as exc:
            raise fail(Exit.BAD_INPUT, str(exc)) from None
    for request_id in decision.decided:
        typer.echo(f"{request_id}: {verb}, {what}")
    summary = f"billing run {run_id}: {len(decision.decided)} {verb} now"
    if decision.already:
        summary += f", {len(decision.already)} {verb} before"
    typer.echo(summary)
    if not decision.failures:  # decided in full: the form waiting in Prefect asks no more
        from invoiceflow.approval.waiting import end_waiting_runs

        for line in end_waiting_runs(run_id, verb, by_whom):
            typer.echo(line)
    if decision.failures:
        for failure in decision.failures:
            typer.echo(f"failed {failure}")
        raise fail(
            Exit.SOME_FAILED,
            f"{len(decision.failures)} request(s) not {verb} yet; rerun "
            f"`invoiceflow {'approve' if verb == 'approved' else 'reject'} {run_id}` to resume",
        )
