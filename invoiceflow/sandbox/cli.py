"""`invoiceflow sandbox`: serve the Stripe sandbox in the foreground."""

from __future__ import annotations

import errno
import logging
from typing import Annotated

import typer

# The port stripe-mock made familiar; tests use port 0 (any free port) instead.
DEFAULT_PORT = 12111


def register(app: typer.Typer) -> None:
    app.command("sandbox")(sandbox)


def sandbox(
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
        bool, typer.Option(help="Deliver webhooks out of order (random delays).")
    ] = False,
    webhook_delay_ms: Annotated[float, typer.Option(help="Delay before each delivery.")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Seed for ids and random faults.")] = None,
    allow_remote_webhooks: Annotated[
        bool,
        typer.Option(help="Deliver webhooks to non-loopback hosts too (default: loopback only)."),
    ] = False,
    invoice_will_be_due_days: Annotated[
        int, typer.Option(help="Days before the due date that invoice.will_be_due fires.")
    ] = 7,
    invoice_overdue_days: Annotated[
        int, typer.Option(help="Days after the due date that invoice.overdue fires.")
    ] = 0,
) -> None:
    """Serve a stateful Stripe API sandbox (test keys only), one log line per request."""
    from invoiceflow.sandbox.config import ConfigError
    from invoiceflow.sandbox.server import serve_forever

    if not 0 <= port <= 65535:
        _refuse(f"--port must be 0-65535, got {port} (0 = any free port)")
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
        )
    except ConfigError as exc:
        _refuse(str(exc))
    except OSError as exc:  # binding the socket: say which, and what to pass instead
        _refuse(_listen_error(exc, host, port))


def _refuse(message: str) -> None:
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
