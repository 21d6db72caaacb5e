"""Only our own, strongly signed events move a request (issue 19, holes 2 and 3).

A correctly signed event may still be someone else's: a connected account's
(as a Connect endpoint receives them), the other mode's, or about an invoice
that is not the request's. And a signing secret must be one nobody can guess.
The events are the sandbox's own, as Stripe sends them, then given another
account or mode the way Stripe would have sent those; they reach our receiver
signed, over HTTP, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.settings import SettingsError, load_settings
from invoiceflow.webhooks import inbox
from invoiceflow.webhooks.signature import SignatureError, verify
from stripe_sandbox.webhooks import sign
from tests.conftest import REPO
from tests.helpers import make_request
from tests.webhooks import Receiver, event_of, serve_receiver

SECRET = "whsec_" + secrets.token_hex(16)  # as the Stripe CLI makes them: 64 hex
REAL = "whsec_" + "Ab3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF"  # as the Dashboard shows them


@pytest.fixture
def receiver(
    configured: dict[str, str], monkeypatch: pytest.MonkeyPatch, database_url: str
) -> Iterator[Receiver]:
    with serve_receiver(monkeypatch, database_url, [SECRET]) as running:
        yield running


def _unbilled(receiver: Receiver) -> str:
    """A request recorded and not yet invoiced (no Stripe invoice recorded)."""
    request = make_request(f"req-trust-{uuid.uuid4().hex[:8]}")
    ledger.submit(receiver.engine, request)
    return request.request_id


def _invoice_paid(client: stripe.StripeClient, request_id: str, amount: int) -> dict[str, Any]:
    """A paid invoice in our (sandbox) account carrying `request_id`, for `amount`;
    Stripe's own invoice.paid event for it, as sent."""
    customer = client.v1.customers.create({"email": "someone@example.com"})
    invoice = client.v1.invoices.create(
        {
            "customer": customer.id,
            "collection_method": "send_invoice",
            "days_until_due": 7,
            "metadata": {"invoiceflow_request_id": request_id},
        }
    )
    client.v1.invoice_items.create(
        {"customer": customer.id, "invoice": invoice.id, "amount": amount, "currency": "usd"}
    )
    client.v1.invoices.finalize_invoice(invoice.id)
    client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})
    return event_of(client, "invoice.paid", invoice.id)


def _as(event: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    """The same event as Stripe would send it from elsewhere: its own event and invoice ids."""
    other = copy.deepcopy(event)
    other.update(id=f"evt_{name}{uuid.uuid4().hex[:12]}", **changes)
    other["data"]["object"]["id"] = f"in_{name}{uuid.uuid4().hex[:12]}"
    return other


def _outcome(receiver: Receiver, event: dict[str, Any]) -> str:
    answer = receiver.post_signed(event)
    assert answer.status_code == 200, answer.text
    stored = inbox.get(receiver.engine, event["id"])
    assert stored is not None  # kept, whatever became of it
    return stored.outcome


def _untouched(receiver: Receiver, request_id: str) -> None:
    row = ledger.require(receiver.engine, request_id)
    assert row.point is RecoveryPoint.PLANNED, row.recovery_point
    assert (row.stripe_invoice_id, row.invoice_status, row.amount_paid) == (None, None, None)


def _connected(event: dict[str, Any]) -> dict[str, Any]:
    return _as(event, "connect", account="acct_1OtherAccount0000")


def _live(event: dict[str, Any]) -> dict[str, Any]:
    return _as(event, "live", livemode=True)


def _unknown(event: dict[str, Any]) -> dict[str, Any]:
    """Our account and mode, but an invoice Stripe does not show under our key."""
    return _as(event, "unknown")


def _itself(event: dict[str, Any]) -> dict[str, Any]:
    """Ours in Stripe, carrying the request's id, but not for the request's total."""
    return event


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        (_connected, "ignored: an event of connected account acct_1OtherAccount0000, not of our"),
        (_live, "ignored: a live-mode event, and we bill in test mode"),
        (_unknown, "is not recorded for the request, and Stripe does not confirm it"),
        (_itself, "totals 777, the request "),
    ],
    ids=["other-account", "other-mode", "not-under-our-key", "not-the-request-total"],
)
def test_a_foreign_event_never_settles_a_request_that_has_no_invoice_yet(
    stripe_client: stripe.StripeClient,
    receiver: Receiver,
    variant: Callable[[dict[str, Any]], dict[str, Any]],
    reason: str,
) -> None:
    request_id = _unbilled(receiver)
    event = variant(_invoice_paid(stripe_client, request_id, 777))

    outcome = _outcome(receiver, event)

    assert outcome.startswith("ignored: ") and reason in outcome, outcome
    _untouched(receiver, request_id)


def test_our_own_invoice_a_run_never_recorded_is_confirmed_by_stripe_and_applied(
    stripe_client: stripe.StripeClient, receiver: Receiver
) -> None:
    """A run that died before recording its draft left the only invoice of the
    request in Stripe; its payment is Stripe's fact, confirmed by a read."""
    request_id = _unbilled(receiver)
    total = ledger.require(receiver.engine, request_id).total_amount
    paid = _invoice_paid(stripe_client, request_id, total)
    invoice_id = paid["data"]["object"]["id"]

    assert _outcome(receiver, paid) == f"applied: request {request_id} is paid"
    row = ledger.require(receiver.engine, request_id)
    assert row.point is RecoveryPoint.PAID
    assert (row.stripe_invoice_id, row.invoice_status, row.amount_paid) == (
        invoice_id,
        "paid",
        total,
    )


def test_an_event_of_the_other_mode_is_ignored_with_a_live_key(
    stripe_client: stripe.StripeClient,
    configured: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_live_" + secrets.token_hex(12))
    monkeypatch.setenv("INVOICEFLOW_ALLOW_LIVE", "1")
    with serve_receiver(monkeypatch, database_url, [SECRET]) as receiver:
        request_id = _unbilled(receiver)
        total = ledger.require(receiver.engine, request_id).total_amount
        test_mode = _invoice_paid(stripe_client, request_id, total)
        assert _outcome(receiver, test_mode) == (
            "ignored: a test-mode event, and we bill in live mode"
        )
        _untouched(receiver, request_id)


# --- hole 3: every secret in STRIPE_WEBHOOK_SECRET must be a real one ---------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (f"{REAL},whsec_", "part 2 of 2 is only the public prefix whsec_"),
        (f"{REAL},", "part 2 of 2 is empty"),
        (f"{REAL}, ,{SECRET}", "part 2 of 3 is empty"),
        (f"whsec_short,{REAL}", "part 1 of 2 is too short"),
        (f"{REAL},sk_test_{'a' * 30}", "part 2 of 2 does not start with whsec_"),
        (f"{REAL},whsec_{'a' * 30}-x", "part 2 of 2 has characters other than letters and digits"),
        ("whsec_abc", "the secret is too short"),
    ],
    ids=["bare-prefix", "trailing-comma", "blank-middle", "short", "not-whsec", "not-alnum", "one"],
)
def test_a_weak_webhook_secret_is_refused_in_one_line(
    clean_env: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    clean_env.setenv("STRIPE_WEBHOOK_SECRET", value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith(f"STRIPE_WEBHOOK_SECRET: {reason}; "), message
    assert "\n" not in message
    for part in value.split(","):  # names the part, never shows it
        assert part.strip() in ("", "whsec_") or part.strip() not in message


def test_real_secrets_pass_and_rotate(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STRIPE_WEBHOOK_SECRET", f"{REAL}, {SECRET}")
    assert load_settings().require_webhook_secrets() == [REAL, SECRET]


def test_the_receiver_refuses_to_start_with_a_weak_secret(tmp_path: Any) -> None:
    """`python -m invoiceflow.webhooks` exits 2 with one line; it never listens.

    (The port is taken, so a receiver that did start would fail differently.)"""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "invoiceflow.webhooks", "--port", port],
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": str(tmp_path),
                "PYTHONPATH": str(REPO),
                "STRIPE_API_KEY": "sk_test_" + secrets.token_hex(12),
                "STRIPE_WEBHOOK_SECRET": f"{REAL},whsec_",
                "INVOICEFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'invoiceflow.db'}",
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: STRIPE_WEBHOOK_SECRET: part 2 of 2 is only the public prefix whsec_; each must "
        "be an endpoint's signing secret (whsec_ and at least 24 letters or digits, as Stripe "
        "shows it), separated by commas while rotating"
    ]
    assert REAL not in done.stderr


def test_verify_accepts_nothing_when_a_secret_is_empty() -> None:
    """The last line, should a weak list ever get past the settings: a body
    signed with the public prefix (or nothing) is not accepted, nor a real one."""
    body = b'{"id": "evt_1", "object": "event"}'
    now = int(time.time())
    verify(body, sign(body, REAL, now), [REAL])  # the control: a real secret passes
    for weak in ("whsec_", "", " "):
        for signer in (weak, REAL):
            with pytest.raises(SignatureError, match="signing secret is empty"):
                verify(body, sign(body, signer, now), [REAL, weak])
    with pytest.raises(SignatureError, match="signing secret is empty"):
        verify(body, sign(body, REAL, now), [])
