"""The `invoiceflow` command line (Typer)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def _register_subcommands() -> None:
    from invoiceflow.sandbox.cli import register as register_sandbox

    register_sandbox(app)


_register_subcommands()


def main() -> None:
    app()
