"""`invoiceflow sandbox`: serves in the foreground with one log line per request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import stripe
import typer
from typer.testing import CliRunner

from stripe_sandbox import RunningSandbox
from stripe_sandbox.cli import register
from tests.conftest import app_env
from tests.inprocess_cli import configured_cli

ROOT = Path(__file__).resolve().parents[2]
# A Typer app of our own: the project CLI may carry commands this test does not care about.
LAUNCH = """
import typer
from stripe_sandbox.cli import register
app = typer.Typer()
app.callback()(lambda: None)
register(app)
app()
"""


def test_help_lists_every_knob() -> None:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    result = CliRunner().invoke(app, ["sandbox", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in (
        "--host",
        "--port",
        "--latency-ms",
        "--jitter-ms",
        "--rate-limit",
        "--fail-before-write",
        "--fail-after-write",
        "--drop-after-write",
        "--webhook-duplicate",
        "--webhook-reorder",
        "--webhook-delay-ms",
        "--seed",
        "--bank-debit-settle-ms",
    ):
        assert flag in result.output


def test_serves_and_logs_one_line_per_request() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCH,
            "sandbox",
            "--port",
            "0",
            "--seed",
            "1",
            "--rate-limit",
            "test",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stderr is not None
        url = ""
        for line in process.stderr:
            if "listening on" in line:
                url = line.split("listening on ")[1].split()[0]
                break
        assert url, "the sandbox did not announce its address"
        secret = "sk_test_never_logged"
        response = httpx.get(url + "/v1/products", headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == 200
        assert httpx.get(url + "/_sandbox/config").json()["rate_limit"] == 25.0
        for _ in range(15):  # fill the log so the reads below cannot block
            httpx.get(url + "/_sandbox/requests")
        lines = [process.stderr.readline() for _ in range(20)]
        logged = [line for line in lines if "/v1/products" in line]
        assert len(logged) == 1 and "GET /v1/products -> 200" in logged[0]
        assert not any(secret in line for line in lines)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def test_pay_by_bank_debit_processes_then_the_bank_answers(
    sandbox: RunningSandbox,
    client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    sandbox.configure(bank_debit_settle_ms=None)
    cli = configured_cli(monkeypatch, request, app_env(sandbox.url, f"sqlite:///{tmp_path}/x.db"))
    invoice_ids = []
    for _ in range(2):
        customer = client.v1.customers.create({})
        draft = client.v1.invoices.create({"customer": customer.id})
        client.v1.invoice_items.create(
            {"customer": customer.id, "invoice": draft.id, "amount": 700}
        )
        invoice_ids.append(client.v1.invoices.finalize_invoice(draft.id).id)

    paid = cli("sandbox", "pay", invoice_ids[0], "--method", "bank-debit")
    failed = cli("sandbox", "pay", invoice_ids[1], "--method", "bank-debit", "--outcome", "failed")

    for result, outcome in ((paid, "paid"), (failed, "failed")):
        assert result.exit_code == 0, result.stderr
        assert "payment processing, 7.00 USD by bank debit" in result.stdout
        assert f"(the bank will answer: {outcome})" in result.stdout
    again = cli("sandbox", "pay", invoice_ids[0])
    assert again.exit_code == 2 and "processing" in again.stderr
    sandbox.settle_bank_debits()
    statuses = [client.v1.invoices.retrieve(invoice_id).status for invoice_id in invoice_ids]
    assert statuses == ["paid", "open"]
    mixed = cli("sandbox", "pay", invoice_ids[1], "--outcome", "paid")
    assert mixed.exit_code == 2 and "--method bank-debit" in mixed.stderr


def test_python_dash_m_serves_the_same_command() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "stripe_sandbox", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "python -m stripe_sandbox" in shown.stdout and "--bank-debit-settle-ms" in shown.stdout
