"""`invoiceflow sandbox`: the Stripe sandbox's commands, loaded when they are used.

The sandbox (`stripe_sandbox`) is a development tool, not part of the product:
the CLI imports it only when this command runs, and without it says in one line
how to get it instead of failing with a traceback.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

from invoiceflow.cli_common import fail
from invoiceflow.outcomes import Exit

HELP = "The Stripe sandbox: serve it, or use a running one."
NOT_INSTALLED = (
    "the Stripe sandbox is not installed (package stripe_sandbox); it comes with "
    "invoiceflow's source checkout: pip install -e '.[dev]' there"
)


class SandboxLoader(TyperGroup):
    """A stand-in for `stripe_sandbox.cli`'s command group: its short help is known
    without the import; parsing, help and sub-commands are the real group's."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        # The parent group invokes `sub_ctx.command`: the real group from here on.
        return _sandbox_group(required=True).make_context(info_name, args, parent, **extra)

    @property
    def commands(self) -> MutableMapping[str, Any]:
        """The real sub-commands, for whoever walks the command tree (help, completion)."""
        group = _sandbox_group(required=False)
        return group.commands if group is not None else {}

    @commands.setter
    def commands(self, _declared: MutableMapping[str, Any]) -> None:
        pass  # none of its own: the stand-in's are the real group's


def _sandbox_group(*, required: bool) -> Any:
    try:
        from stripe_sandbox.cli import sandbox_app
    except ModuleNotFoundError as exc:
        if not sandbox_missing(exc):
            raise  # the sandbox is there and something it needs is not: that traceback helps
        if required:
            raise fail(Exit.BAD_INPUT, NOT_INSTALLED) from None
        return None
    return typer.main.get_group(sandbox_app)


def sandbox_missing(exc: ModuleNotFoundError) -> bool:
    """Whether it is the sandbox package itself that could not be imported."""
    return exc.name is not None and exc.name.partition(".")[0] == "stripe_sandbox"


def register(app: typer.Typer) -> None:
    app.add_typer(typer.Typer(), name="sandbox", cls=SandboxLoader, help=HELP)
