"""What every `invoiceflow` command shares: the one-line refusal and its exit code, a
database's errors as exit codes, and the help layout.

Its own module so the sub-commands (`batch`, `dunning`, `reconcile`) and the
`invoiceflow` group that registers them all import it, and not each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from invoiceflow.outcomes import Exit

# Click's plain help, not Rich's panels: at 80 columns those cut option names
# off and label every flag `<bool>`; this one wraps the help text instead.
HELP_SETTINGS = {"max_content_width": 100}


def fail(code: Exit, message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(int(code))


@contextmanager
def database_errors() -> Iterator[None]:
    """An unreachable or locked database is a temporary failure with a one-line reason;
    one that does not exist is configuration."""
    from sqlalchemy.exc import OperationalError

    from invoiceflow.outcomes import missing_database

    try:
        yield
    except OperationalError as exc:
        missing = missing_database(exc)
        if missing:
            raise fail(
                Exit.BAD_INPUT, f"{missing}; create it or fix INVOICEFLOW_DATABASE_URL"
            ) from None
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise fail(Exit.TEMPORARY, f"database unreachable: {reason}") from None
