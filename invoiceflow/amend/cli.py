"""`invoiceflow amend FILE`: revise a sent request's invoice to the file's content.

Prints one line: the version made and its invoice, or that there was nothing to
do. Exit 0 when amended (or the file is the latest version already), 2 for a
request never sent (`invoiceflow invoice` sends it) or a changed customer or
currency, 3 while another version is being made from other content, 4 for a
paid or void invoice (Stripe revises only open ones) or a Stripe refusal, 5 and
6 as for `invoice` (`invoiceflow.outcomes.Exit`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from invoiceflow.cli_common import database_errors, fail
from invoiceflow.outcomes import Exit


def register(app: typer.Typer) -> None:
    app.command("amend")(amend)


def amend(
    request_file: Annotated[
        Path, typer.Argument(help="The sent request's id with its changed content, JSON or YAML.")
    ],
) -> None:
    """Amend a sent invoice: one Stripe revision of it with the file's lines, finalized and
    sent; Stripe voids the one it replaces. A rerun does nothing more."""
    from invoiceflow import ledger, progress
    from invoiceflow.amend.revise import AmendInProgress, AmendRefused, NotRevisable
    from invoiceflow.outcomes import classify
    from invoiceflow.request import RequestError, load_request
    from invoiceflow.retry import describe
    from invoiceflow.runtime import get_runtime
    from invoiceflow.settings import SettingsError, get_settings

    try:
        request = load_request(request_file)
        get_settings().require_stripe_key()
    except (RequestError, SettingsError) as exc:
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    progress.print_to_stderr()
    from invoiceflow.amend.revise import amend as make_amendment

    request_id = request.request_id
    try:
        with database_errors():
            amended = make_amendment(get_runtime(), request)
    except ledger.RequestNotFound:
        raise fail(
            Exit.BAD_INPUT,
            f"no request {request_id!r} to amend; send it first with `invoiceflow invoice FILE`",
        ) from None
    except NotRevisable as exc:
        raise fail(Exit.REFUSED, str(exc)) from None
    except AmendInProgress as exc:
        raise fail(Exit.CONFLICT, str(exc)) from None
    except AmendRefused as exc:  # never sent, another customer or currency
        raise fail(Exit.BAD_INPUT, str(exc)) from None
    except Exception as exc:
        raise fail(classify(exc), f"{request_id}: {describe(exc)}") from None
    row = amended.row
    invoice = f"{row.stripe_invoice_id} {row.invoice_number or ''}".rstrip()
    if not amended.changed:
        typer.echo(
            f"{request_id}: nothing to amend — the file is version {amended.version} "
            f"already ({invoice}, {row.recovery_point})"
        )
        return
    typer.echo(f"{request_id}: version {amended.version} {row.recovery_point} — {invoice}")
