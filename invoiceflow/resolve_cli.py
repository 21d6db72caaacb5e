"""`invoiceflow resolve`: a person's answer for a request that stopped for a check.

Outside the `invoicing` package on purpose: importing any module of it loads the
package and with it the ledger and the Stripe SDK (a second), and every command,
`status` included, registers this one at start.

`resolve REQUEST --sent | --not-sent --note TEXT` records a person's answer where a
run stopped for one (`invoiceflow.invoicing.resolve`). Prints one line; exit 0, or
the code and one-line reason of the refusal (`invoiceflow.outcomes.Exit`).
"""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from invoiceflow.cli_common import database_errors, fail
from invoiceflow.outcomes import Exit


def register(app: typer.Typer) -> None:
    app.command("resolve")(resolve)


def resolve(
    request_id: Annotated[str, typer.Argument(help="The request that stopped for a check.")],
    sent: Annotated[
        bool | None,
        typer.Option(
            "--sent/--not-sent",
            help="What the check found: the invoice was emailed, or it was not.",
            show_default=False,
        ),
    ] = None,
    note: Annotated[str, typer.Option("--note", help="What was checked, for the audit log.")] = "",
    by: Annotated[
        str | None, typer.Option("--by", help="Who checked (default: this OS user).")
    ] = None,
) -> None:
    """Settle a request that stopped for a manual check, e.g. an unrecorded send older
    than Stripe's event retention. --sent: a rerun awaits payment without sending;
    --not-sent: a rerun sends it once."""
    from invoiceflow import ledger
    from invoiceflow.invoicing.resolve import Answer, NothingToResolve, resolve_send
    from invoiceflow.retry import describe
    from invoiceflow.runtime import get_runtime
    from invoiceflow.settings import SettingsError

    if sent is None:
        raise fail(Exit.BAD_INPUT, "say what the check found: --sent or --not-sent")
    if not note.strip():
        raise fail(Exit.BAD_INPUT, "--note is required: what was checked, for the audit log")
    answer = Answer(sent=sent, by=by or _os_user(), note=note.strip())
    try:
        with database_errors():
            row = resolve_send(get_runtime(), request_id, answer)
    except SettingsError as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    except ledger.RequestNotFound:
        raise fail(
            Exit.BAD_INPUT, f"no request {request_id!r}; `invoiceflow status` lists them"
        ) from None
    except ledger.RequestBusy as exc:
        raise fail(Exit.BUSY, str(exc)) from None
    except NothingToResolve as exc:
        raise fail(Exit.REFUSED, str(exc)) from None
    except Exception as exc:
        from invoiceflow.outcomes import classify

        raise fail(classify(exc), f"{request_id}: {describe(exc)}") from None
    then = (
        "a rerun awaits payment without sending"
        if answer.sent
        else "a rerun sends it once (`invoiceflow invoice FILE`)"
    )
    typer.echo(
        f"{request_id}: invoice {row.stripe_invoice_id} recorded as {answer.said} "
        f"by {answer.by}; {then}"
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return "unknown"
