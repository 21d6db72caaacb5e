"""`invoiceflow sandbox`: serve the Stripe sandbox in the foreground; and, against a
running one (STRIPE_API_BASE), `webhook-secret URL` and `pay INVOICE`.

Only the serving imports the sandbox's server; the two helpers are Stripe SDK
calls like any client's.
"""

from __future__ import annotations

import errno
import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn

import typer

if TYPE_CHECKING:
    import stripe

# The port stripe-mock made familiar; tests use port 0 (any free port) instead.
DEFAULT_PORT = 12111
# What `serve`'s receiver acts on (docs/service.md).
WebhookEvent = Literal[
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "payment_intent.processing",
]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = (
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "payment_intent.processing",
)
_SANDBOX_HINT = (
    "STRIPE_API_BASE is not set; these commands talk to a running `invoiceflow sandbox`: "
    "export STRIPE_API_BASE=http://127.0.0.1:12111"
)


class Card(StrEnum):
    """Stripe's test payment methods, by what they do."""

    VISA = "visa"
    DECLINED = "declined"
    INSUFFICIENT_FUNDS = "insufficient-funds"

    @property
    def payment_method(self) -> str:
        return {
            Card.VISA: "pm_card_visa",
            Card.DECLINED: "pm_card_chargeDeclined",
            Card.INSUFFICIENT_FUNDS: "pm_card_chargeDeclinedInsufficientFunds",
        }[self]


class Method(StrEnum):
    """How the customer pays: a card answers at once, a bank debit processes first."""

    CARD = "card"
    BANK_DEBIT = "bank-debit"


class Outcome(StrEnum):
    """What the bank answers a debit with, later (`pending`: it never answers)."""

    PAID = "paid"
    FAILED = "failed"
    PENDING = "pending"

    @property
    def payment_method(self) -> str:
        # Stripe's ACH Direct Debit test payment methods (stripe_sandbox/resources/bank_debits.py).
        return {
            Outcome.PAID: "pm_usBankAccount_success",
            Outcome.FAILED: "pm_usBankAccount_insufficientFunds",
            Outcome.PENDING: "pm_usBankAccount_processing",
        }[self]


sandbox_app = typer.Typer(
    help="The Stripe sandbox: serve it, or use a running one.",
    rich_markup_mode=None,  # plain help: full option names at 80 columns (see invoiceflow.cli)
    context_settings={"max_content_width": 100},
)


def register(app: typer.Typer) -> None:
    app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.callback(invoke_without_command=True)
def sandbox(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 = any free port).")] = (
        DEFAULT_PORT
    ),
    latency_ms: Annotated[float, typer.Option(help="Added latency per request.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Random extra latency, up to this.")] = 0.0,
    rate_limit: Annotated[
        str, typer.Option(help="Requests/s per API key, or 'test' (25) / 'live' (100).")
    ] = "off",
    fail_before_write: Annotated[
        float, typer.Option(help="Fraction of requests failing with 500 before the write.")
    ] = 0.0,
    fail_after_write: Annotated[
        float, typer.Option(help="Fraction of requests failing with 500 after the write.")
    ] = 0.0,
    drop_after_write: Annotated[
        float, typer.Option(help="Fraction of connections dropped after the write.")
    ] = 0.0,
    webhook_duplicate: Annotated[
        float, typer.Option(help="Fraction of webhook deliveries sent twice.")
    ] = 0.0,
    webhook_reorder: Annotated[
        bool,
        typer.Option("--webhook-reorder", help="Deliver webhooks out of order (random delays)."),
    ] = False,
    webhook_delay_ms: Annotated[float, typer.Option(help="Delay before each delivery.")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Seed for ids and random faults.")] = None,
    allow_remote_webhooks: Annotated[
        bool,
        typer.Option(
            "--allow-remote-webhooks",
            help="Deliver webhooks to non-loopback hosts too (default: loopback only).",
        ),
    ] = False,
    invoice_will_be_due_days: Annotated[
        int, typer.Option(help="Days before the due date that invoice.will_be_due fires.")
    ] = 7,
    invoice_overdue_days: Annotated[
        int, typer.Option(help="Days after the due date that invoice.overdue fires.")
    ] = 0,
    bank_debit_settle_ms: Annotated[
        float,
        typer.Option(
            help="How long a bank debit processes before its outcome (invoices on no test "
            "clock; on a clock: 4 days of clock time).",
        ),
    ] = 2_000.0,
) -> None:
    """Serve a stateful Stripe API sandbox (test keys only), one log line per request.

    With a command (webhook-secret, pay): use the sandbox at STRIPE_API_BASE instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not 0 <= port <= 65535:  # before the server's imports: a typo answers at once
        _refuse(f"--port must be 0-65535, got {port} (0 = any free port)")
    from stripe_sandbox.config import ConfigError
    from stripe_sandbox.server import serve_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        serve_forever(
            host,
            port,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            rate_limit=rate_limit,
            fail_before_write=fail_before_write,
            fail_after_write=fail_after_write,
            drop_after_write=drop_after_write,
            webhook_duplicate=webhook_duplicate,
            webhook_reorder=webhook_reorder,
            webhook_delay_ms=webhook_delay_ms,
            seed=seed,
            allow_remote_webhooks=allow_remote_webhooks,
            invoice_will_be_due_days=invoice_will_be_due_days,
            invoice_overdue_days=invoice_overdue_days,
            bank_debit_settle_ms=bank_debit_settle_ms,
        )
    except ConfigError as exc:
        _refuse(str(exc))
    except OSError as exc:  # binding the socket: say which, and what to pass instead
        _refuse(_listen_error(exc, host, port))


@sandbox_app.command("webhook-secret")
def webhook_secret(
    url: Annotated[
        str,
        typer.Argument(help="Where to deliver, e.g. http://127.0.0.1:8080/webhooks/stripe."),
    ],
) -> None:
    """Register URL as the sandbox's webhook endpoint and print its signing secret.

    stdout is the secret alone (whsec_…), for STRIPE_WEBHOOK_SECRET. It is a
    test sandbox's secret, so printing it is the point. As in Stripe, a secret
    is shown only when its endpoint is created: an endpoint already registered
    for URL is replaced, and its old secret stops working.
    """
    import stripe

    client = _client()
    try:
        replaced = [
            endpoint.id
            for endpoint in client.v1.webhook_endpoints.list({"limit": 100}).auto_paging_iter()
            if endpoint.url == url
        ]
        for endpoint_id in replaced:
            client.v1.webhook_endpoints.delete(endpoint_id)
        created = client.v1.webhook_endpoints.create(
            {"url": url, "enabled_events": list(WEBHOOK_EVENTS)}
        )
    except stripe.StripeError as exc:
        _stripe_failed(exc)
    note = f"; replaced {', '.join(replaced)}" if replaced else ""
    typer.echo(
        f"webhook endpoint {created.id} for {url} ({', '.join(WEBHOOK_EVENTS)}){note}", err=True
    )
    typer.echo(created.secret)


@sandbox_app.command("pay")
def pay(
    invoice: Annotated[
        str,
        typer.Argument(help="A Stripe invoice id (in_…) or a request id from `status`."),
    ],
    card: Annotated[Card, typer.Option(help="The test card the customer pays with.")] = Card.VISA,
    method: Annotated[
        Method, typer.Option(help="card: paid or declined now; bank-debit: processing first.")
    ] = Method.CARD,
    outcome: Annotated[
        Outcome | None,
        typer.Option(help="With --method bank-debit: what the bank answers later."),
    ] = None,
) -> None:
    """Pay an open invoice in the sandbox, as its customer would.

    The sandbox then sends the signed event (invoice.paid, or
    invoice.payment_failed for a declined card) to its webhook endpoints. A bank
    debit answers at once with payment_intent.processing, the invoice still open;
    invoice.paid or invoice.payment_failed follows when the sandbox settles it.
    Exit 0 paid or processing, 4 declined, 2 an invoice that cannot be paid
    (unknown, paid, void, processing).
    """
    import stripe

    from invoiceflow.money import format_minor_units

    if outcome is not None and method is not Method.BANK_DEBIT:
        _refuse("--outcome is what a bank answers: pass it with --method bank-debit")
    if method is Method.BANK_DEBIT and card is not Card.VISA:
        _refuse("--card is for --method card; a bank debit's result is --outcome")
    client = _client()
    invoice_id = invoice if invoice.startswith("in_") else _invoice_of_request(invoice)
    bank_debit = (outcome or Outcome.PAID) if method is Method.BANK_DEBIT else None
    payment_method = bank_debit.payment_method if bank_debit else card.payment_method
    try:
        paid = client.v1.invoices.pay(invoice_id, {"payment_method": payment_method})
    except stripe.CardError as exc:
        typer.echo(f"error: {invoice_id} declined: {exc.user_message or exc}", err=True)
        raise typer.Exit(4) from None
    except stripe.StripeError as exc:
        _stripe_failed(exc)
    amount = format_minor_units(paid.amount_remaining or paid.amount_paid, paid.currency)
    if bank_debit is not None:
        typer.echo(
            f"{invoice_id} ({paid.number}): payment processing, {amount} by bank debit "
            f"(the bank will answer: {bank_debit.value})"
        )
        return
    typer.echo(f"{invoice_id} ({paid.number}): {paid.status}, {amount} by {card.value} card")


def _client() -> stripe.StripeClient:
    from invoiceflow.settings import SettingsError, get_settings
    from invoiceflow.stripe_api import make_client

    try:
        settings = get_settings()
        if not settings.stripe_api_base:
            _refuse(_SANDBOX_HINT)
        return make_client(settings)
    except SettingsError as exc:
        _refuse(str(exc))


def _invoice_of_request(request_id: str) -> str:
    from invoiceflow import ledger
    from invoiceflow.runtime import get_runtime

    row = ledger.load(get_runtime().engine, request_id)
    if row is None or row.stripe_invoice_id is None:
        what = "no request" if row is None else "no Stripe invoice yet for request"
        _refuse(f"{what} {request_id!r}; give an invoice id (in_…) from `invoiceflow status`")
    return row.stripe_invoice_id


def _stripe_failed(exc: Exception) -> NoReturn:
    import stripe

    if isinstance(exc, stripe.APIConnectionError):
        typer.echo(
            "error: the sandbox at STRIPE_API_BASE does not answer; is it running?", err=True
        )
        raise typer.Exit(5)
    message = getattr(exc, "user_message", None) or str(exc)
    _refuse(message.strip().splitlines()[0])


def _refuse(message: str) -> NoReturn:
    """One line and exit 2, like every other configuration error of the CLI."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _listen_error(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use; pass --port N (0 = any free port)"
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {port}; use one above 1023 (0 = any free port)"
    reason = exc.strerror or str(exc)
    return f"cannot listen on {host}:{port}: {reason}; check --host and --port"
