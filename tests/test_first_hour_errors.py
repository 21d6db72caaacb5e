"""What a new user meets when something is unreachable, refused or miscounted (issue 22,
items 7-10): one line naming what and where, the documented exit code, numbers that agree,
and a log line for every refusal that never holds the secret."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from typer.testing import Result

from invoiceflow.outcomes import Exit, classify
from tests.helpers import bill_plain, make_request
from tests.inprocess_cli import configured_cli

# Nothing listens on port 1: every connection to it is refused at once.
CLOSED = "http://127.0.0.1:1"
STRIPE_SUPPORT = "support@stripe.com"
# The rule is the same on either ledger; the SQLite run is the contract.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _request_file(directory: Path, request_id: str = "first-hour-1") -> Path:
    path = directory / f"{request_id}.json"
    path.write_text(make_request(request_id).model_dump_json(), encoding="utf-8")
    return path


# --- 7. Stripe unreachable -------------------------------------------------------


@pytest.fixture
def stripe_closed(configured: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Configured as for the sandbox, but STRIPE_API_BASE names a closed port."""
    from invoiceflow.runtime import reset_runtime
    from invoiceflow.settings import get_settings

    monkeypatch.setenv("STRIPE_API_BASE", CLOSED)
    get_settings.cache_clear()
    reset_runtime()
    return {**configured, "STRIPE_API_BASE": CLOSED}


def test_unreachable_stripe_is_one_line_naming_stripe_api_base_and_exit_5(
    stripe_closed: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    from invoiceflow.outcomes import failure_message
    from invoiceflow.retry import describe

    caplog.set_level(logging.INFO, logger="invoiceflow")
    with pytest.raises(Exception) as failed:
        bill_plain(make_request("unreachable-1"))

    assert classify(failed.value) is Exit.TEMPORARY  # exit 5: rerun later, it resumes
    line = describe(failed.value)
    assert "\n" not in line
    assert "Stripe unreachable at http://127.0.0.1:1" in line, line
    assert "connection refused" in line and "STRIPE_API_BASE" in line, line
    assert STRIPE_SUPPORT not in failure_message(failed.value)
    retries = [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]
    assert retries, "the retries are announced"
    for one in retries:
        assert STRIPE_SUPPORT not in one and "STRIPE_API_BASE" in one, one
        assert len(one) < 200, one


def test_unreachable_stripe_is_retried_within_a_bounded_wait(stripe_closed: dict[str, str]) -> None:
    from invoiceflow.retry import RetryPolicy, call_with_retries
    from invoiceflow.settings import get_settings
    from invoiceflow.stripe_api import make_client

    client = make_client(get_settings())
    calls = 0

    def read() -> object:
        nonlocal calls
        calls += 1
        return client.v1.customers.list({"limit": 1})

    # Twenty attempts allowed, but an unreachable Stripe only gets its budget.
    policy = RetryPolicy(attempts=20, base_delay=0.1, max_delay=0.1, unreachable_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        call_with_retries(read, "list customers", policy=policy)
    assert time.monotonic() - started < 0.3 + 5  # the budget, plus one refused attempt's slack
    assert 2 <= calls < 20, calls


@pytest.mark.usefixtures("prefect_api")  # the invoice command runs its flow here
def test_cli_invoice_with_stripe_unreachable_prints_one_line_and_exits_5(
    stripe_closed: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from invoiceflow.settings import get_settings

    invoke = configured_cli(monkeypatch, request, stripe_closed)
    result = invoke("invoice", str(_request_file(tmp_path)), "--no-wait")

    assert result.exit_code == Exit.TEMPORARY, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Stripe unreachable at http://127.0.0.1:1" in errors[0]
    assert "STRIPE_API_BASE" in errors[0]
    assert STRIPE_SUPPORT not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    # In-task retries only: no step is rerun later (a task retry) for an address
    # that refuses, so each call announces at most its in-task retries.
    retries = Counter(
        line.split(": Stripe unreachable")[0]
        for line in result.stderr.splitlines()
        if "; retry " in line
    )
    assert retries, result.stderr
    assert max(retries.values()) <= get_settings().retry_attempts - 1, retries


# --- 8. Prefect unreachable, a database that is not there ---------------------------

SECRET = "whsec_" + "a1" * 16
TOKEN = "first-hour-trigger-token-0123456789"


@pytest.fixture
def prefect_closed() -> Iterator[str]:
    """This process's Prefect client pointed at a closed port (Prefect reads its
    settings at import, so the environment alone would not move it)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = f"{CLOSED}/api"
    with temporary_settings({PREFECT_API_URL: url}):
        yield url


def _one_error_line(result: Result) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.count("\n") <= 2, result.stderr  # the line, and at most a progress note
    return errors[0]


@SQLITE_ONLY
def test_cli_invoice_with_prefect_unreachable_is_one_line_and_exit_5(
    configured: dict[str, str],
    prefect_closed: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    invoke = configured_cli(monkeypatch, request, configured)
    started = time.monotonic()
    result = invoke("invoice", str(_request_file(tmp_path)), "--no-wait")

    assert result.exit_code == Exit.TEMPORARY, (result.stdout, result.stderr)
    line = _one_error_line(result)
    assert "Prefect API unreachable at http://127.0.0.1:1/api" in line, line
    assert "PREFECT_API_URL" in line, line
    assert time.monotonic() - started < 20, "failed fast, not after the client's retries"


@SQLITE_ONLY
def test_cli_serve_with_prefect_unreachable_is_one_line_and_exit_5(
    configured: dict[str, str],
    prefect_closed: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    env = {
        **configured,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "INVOICEFLOW_TRIGGER_TOKEN": TOKEN,
    }
    invoke = configured_cli(monkeypatch, request, env)
    started = time.monotonic()
    result = invoke("serve", "--port", "0")

    assert result.exit_code == Exit.TEMPORARY, (result.stdout, result.stderr)
    line = _one_error_line(result)
    assert "Prefect API unreachable at http://127.0.0.1:1/api" in line, line
    assert "PREFECT_API_URL" in line, line
    assert time.monotonic() - started < 20, "failed fast, not after the client's retries"


def test_a_postgresql_database_that_does_not_exist_is_configuration_exit_2(
    postgres_unavailable: str | None,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from sqlalchemy.engine import make_url

    from tests.conftest import POSTGRES_ADMIN_URL

    if postgres_unavailable:
        pytest.skip(postgres_unavailable)
    missing = make_url(POSTGRES_ADMIN_URL).set(database="invoiceflow_no_such_db")
    url = missing.render_as_string(hide_password=False)
    invoke = configured_cli(monkeypatch, request, {"INVOICEFLOW_DATABASE_URL": url})
    result = invoke("status")

    assert result.exit_code == Exit.BAD_INPUT, (result.stdout, result.stderr)
    line = _one_error_line(result)
    assert 'database "invoiceflow_no_such_db" does not exist' in line, line
    assert "INVOICEFLOW_DATABASE_URL" in line, line


# --- 9. numbers that agree ----------------------------------------------------------


@SQLITE_ONLY
def test_status_bills_only_sent_invoices_and_shows_totals_for_one_request(
    configured: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from invoiceflow import ledger
    from invoiceflow.money import format_minor_units
    from invoiceflow.runtime import get_runtime

    sent = make_request("numbers-sent")
    bill_plain(sent)
    invoke = configured_cli(monkeypatch, request, configured)

    one = invoke("status")
    assert one.exit_code == 0, one.stderr
    billed = format_minor_units(sent.total_amount(), "usd")
    assert one.stdout.splitlines()[-1] == (
        f"total USD: 1 request, billed {billed}, paid 0.00 USD, "
        f"outstanding {billed}, overdue 0.00 USD"
    ), one.stdout

    planned = make_request("numbers-planned", customer="globex")
    ledger.submit(get_runtime().engine, planned)  # recorded, no invoice yet
    two = invoke("status")
    assert two.exit_code == 0, two.stderr
    assert two.stdout.splitlines()[-1].startswith(
        f"total USD: 2 requests (1 not billed), billed {billed}, "
    ), two.stdout
    [sums] = json.loads(invoke("status", "--totals", "--json").stdout)
    assert (sums["requests"], sums["not_billed"], sums["billed"]) == (2, 1, sent.total_amount())
    assert sums["outstanding"] == sent.total_amount()


@SQLITE_ONLY
def test_reconcile_progress_counts_applied_events_as_its_summary_does(
    configured: dict[str, str],
    stripe_client: stripe.StripeClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from invoiceflow.reconcile import events
    from invoiceflow.reconcile.sweep import reconcile
    from invoiceflow.runtime import get_runtime

    monkeypatch.setattr(events, "PROGRESS_EVERY_SECONDS", 0.0)  # a line for every event
    for name in ("a", "b", "c"):
        invoice_id = bill_plain(make_request(f"numbers-{name}")).stripe_invoice_id
        stripe_client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
    since = datetime.now(UTC) - timedelta(days=1)

    def run() -> tuple[Any, list[str]]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="invoiceflow.progress"):
            report = reconcile(get_runtime(), since=since, stale_minutes=10, resume=bill_plain)
        notes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("checked ")]
        return report, notes

    first, notes = run()
    assert first.events_applied == 3, first.summary()
    assert notes == ["checked 1 of 3 events, 1 applied", "checked 2 of 3 events, 2 applied"]

    again, notes = run()  # the same events: duplicates, nothing applied
    assert again.events_applied == 0, again.summary()
    assert notes == ["checked 1 of 3 events, 0 applied", "checked 2 of 3 events, 0 applied"]


# --- 10. refusals are logged, without the secret -------------------------------------

OTHER_SECRET = "whsec_" + "b2" * 16
WRONG_TOKEN = "not-the-trigger-token-9876543210"


def _service_settings(configured: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    from invoiceflow.runtime import reset_runtime
    from invoiceflow.settings import get_settings

    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("INVOICEFLOW_TRIGGER_TOKEN", TOKEN)
    reset_runtime()
    return get_settings()


def _refusals(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    lines = [r.getMessage() for r in caplog.records]
    for secret in (SECRET, OTHER_SECRET, TOKEN, WRONG_TOKEN, "v1="):
        assert not any(secret in line for line in lines), (secret, lines)
    return [line for line in lines if line.startswith(start)]


@SQLITE_ONLY
def test_refused_webhooks_are_logged_with_the_reason_and_answer_errors(
    configured: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.testclient import TestClient

    from invoiceflow.webhooks.app import create_app
    from stripe_sandbox.webhooks import sign

    client = TestClient(create_app(_service_settings(configured, monkeypatch)))
    body = json.dumps({"id": "evt_first_hour", "type": "invoice.paid"}).encode()
    now = int(time.time())
    cases = [
        (sign(body, OTHER_SECRET, now), "no Stripe-Signature matches a configured secret"),
        (sign(body, SECRET, now - 3600), "Stripe-Signature timestamp is outside the tolerance"),
        (None, "missing Stripe-Signature header"),
    ]
    for signature, reason in cases:
        caplog.clear()
        headers = {"Stripe-Signature": signature} if signature else {}
        with caplog.at_level(logging.INFO, logger="invoiceflow"):
            response = client.post("/webhooks/stripe", content=body, headers=headers)

        assert response.status_code == 400, response.text
        assert response.json() == {"errors": [reason]}
        logged = _refusals(caplog, "refused a Stripe webhook")
        assert logged == [f"refused a Stripe webhook from testclient (400): {reason}"], logged


@SQLITE_ONLY
def test_refused_triggers_are_logged_with_the_reason_never_the_token(
    configured: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.testclient import TestClient

    from invoiceflow.service.trigger import MAX_BODY_BYTES, create_trigger_app

    client = TestClient(create_trigger_app(_service_settings(configured, monkeypatch)))
    cases = [
        ({"Authorization": f"Bearer {WRONG_TOKEN}"}, b"{}", 401, "wrong bearer token"),
        ({}, b"{}", 401, "no Authorization header"),
        ({"Authorization": TOKEN}, b"{}", 401, "Authorization is not 'Bearer <token>'"),
        (
            {"Authorization": f"Bearer {TOKEN}"},
            b" " * (MAX_BODY_BYTES + 1),
            413,
            f"body larger than {MAX_BODY_BYTES} bytes",
        ),
    ]
    for headers, body, status, reason in cases:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="invoiceflow"):
            response = client.post("/invoices", content=body, headers=headers)

        assert response.status_code == status, response.text
        assert list(response.json()) == ["errors"] and len(response.json()["errors"]) == 1
        logged = _refusals(caplog, "refused POST /invoices")
        assert len(logged) == 1, logged
        assert logged[0].startswith(f"refused POST /invoices from testclient ({status}): {reason}")
