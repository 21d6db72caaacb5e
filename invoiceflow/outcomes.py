"""How a run ended, in the terms its caller acts on: the CLI's exit codes and
the one-line reason a failed run shows in the Prefect UI."""

from __future__ import annotations

import re
from enum import IntEnum


class Exit(IntEnum):
    """Exit codes of `invoiceflow invoice` and `batch`, stable for scripts and schedulers."""

    OK = 0
    UNEXPECTED = 1
    BAD_INPUT = 2
    CONFLICT = 3
    REFUSED = 4
    TEMPORARY = 5
    BUSY = 6
    # `invoiceflow batch`: the run finished, and some of its requests failed.
    SOME_FAILED = 7


# What the operator should do, by outcome (the exit-code table in docs/walkthrough.md).
ADVICE = {
    Exit.UNEXPECTED: "unexpected error; read the run's log",
    Exit.BAD_INPUT: "bad input or configuration; fix it and resubmit",
    Exit.CONFLICT: "request_id already used for other content; use a new request_id",
    Exit.REFUSED: "Stripe refused it for good; fix it in Stripe or the request, then rerun",
    Exit.TEMPORARY: "temporary failure, retries exhausted; rerun later, it resumes",
    Exit.BUSY: "another run holds this request; it finishes it",
    Exit.SOME_FAILED: "some requests of the batch failed; fix them, then rerun to resume",
}


def classify(exc: BaseException) -> Exit:
    """Map a failure to the exit code that tells the caller what to do next."""
    import stripe
    from sqlalchemy.exc import OperationalError

    from invoiceflow import catalog, invoicing, ledger
    from invoiceflow.prefect_reach import is_prefect_unreachable
    from invoiceflow.request import RequestError
    from invoiceflow.retry import is_transient
    from invoiceflow.settings import SettingsError

    if isinstance(exc, RequestError | SettingsError) or missing_database(exc):
        return Exit.BAD_INPUT
    if isinstance(exc, ledger.RequestConflict):
        return Exit.CONFLICT
    if isinstance(exc, ledger.RequestBusy | ledger.LeaseLost):
        return Exit.BUSY
    if is_transient(exc) or isinstance(exc, OperationalError) or is_prefect_unreachable(exc):
        return Exit.TEMPORARY
    refused = (
        stripe.StripeError,
        invoicing.InvoiceMismatch,
        invoicing.SendUnverifiable,
        catalog.ArchivedPrice,
    )
    if isinstance(exc, refused):
        return Exit.REFUSED
    return Exit.UNEXPECTED


# PostgreSQL refusing a connection for a name that is not there: no wait fixes it.
_MISSING = re.compile(r'\b(database|role) "[^"]*" does not exist')


def missing_database(exc: BaseException) -> str | None:
    """`database "x" does not exist` (or its role) when `exc` says so: configuration."""
    from sqlalchemy.exc import OperationalError

    if not isinstance(exc, OperationalError):
        return None
    found = _MISSING.search(str(exc.orig or exc))
    return found.group(0) if found else None


def failure_message(exc: BaseException) -> str:
    """One line for a failed run's state: what happened, then what to do."""
    from invoiceflow.retry import describe

    return f"{describe(exc)} — {ADVICE[classify(exc)]}"
