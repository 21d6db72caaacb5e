"""The customers' side of the soak: pays, declines and voids sent invoices through
the SDK (by each request's fate), and posts forged webhooks straight at the receiver:
badly signed ones, weakly signed ones (issue 19: a secret anyone knows, such as the
public prefix `whsec_`), and foreign ones, correctly signed but of another account,
of the other mode, or of an invoice Stripe does not show under our key.

The sandbox fails these calls too (500s, dropped connections, 429s), so every
action reads the invoice first and is retried until Stripe shows its outcome:
a pay whose 500 came after the write is found paid, not paid twice.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from typing import Any

import httpx
import stripe

from bench.soak.journal import Journal
from invoiceflow.stripe_keys import META_REQUEST_ID
from stripe_sandbox.webhooks import sign

CARDS = {"pay": "pm_card_visa", "decline": "pm_card_chargeDeclined"}
# Ways to sign a forged event with a secret no one should accept (issue 19, hole 3).
BAD_SIGNATURES = ("other_secret", "stale", "garbage")
WEAK_SIGNATURES = {"weak_prefix": "whsec_", "weak_empty": "", "weak_short": "whsec_0"}
# What makes a correctly signed event not ours (issue 19, hole 2).
FOREIGN = ("other_account", "other_mode", "unknown_invoice")
ATTEMPTS = 30
# Stripe refuses a signature older than this (the receiver's tolerance).
STALE_SECONDS = 3_600


class Payer:
    def __init__(self, client: stripe.StripeClient, journal: Journal) -> None:
        self.client = client
        self.journal = journal
        self.done: set[str] = set()  # request ids whose fate has been acted on

    def act(self, request_id: str, invoice_id: str, fate: str) -> None:
        """Pay, decline or void one sent invoice; journal what Stripe shows after."""
        if request_id in self.done or fate == "leave":
            return
        outcome = self._settle(invoice_id, fate)
        self.done.add(request_id)
        if fate == "void":
            if outcome == "void":  # else Stripe had settled it otherwise: nothing voided
                self.journal.note("void", request_id=request_id, invoice_id=invoice_id)
        else:
            self.journal.note("pay", request_id=request_id, invoice_id=invoice_id, outcome=outcome)

    def _settle(self, invoice_id: str, fate: str) -> str:
        for attempt in range(ATTEMPTS):
            try:
                status = self.client.v1.invoices.retrieve(invoice_id).status
                if fate == "pay" and status == "paid":
                    return "paid"
                if fate == "void" and status == "void":
                    return "void"
                if status != "open":
                    return str(status)  # settled otherwise; the verifier judges it
                if fate == "void":
                    self.client.v1.invoices.void_invoice(invoice_id)
                else:
                    self.client.v1.invoices.pay(invoice_id, {"payment_method": CARDS[fate]})
                    if fate == "decline":
                        return "paid"  # the declining card paid: the verifier will say so
            except stripe.CardError:
                if fate == "decline":
                    return "declined"
            except stripe.StripeError:
                pass  # a 500, a 429 or a dropped connection: look again
            time.sleep(min(5.0, 0.2 * 2**attempt) * random.random())
        raise RuntimeError(f"could not {fate} invoice {invoice_id} in {ATTEMPTS} attempts")


def forge(
    receiver_url: str,
    journal: Journal,
    real_secret: str,
    invoice_id: str,
    rng: random.Random,
    hows: tuple[str, ...] = BAD_SIGNATURES,
) -> None:
    """POST a well-shaped `invoice.paid` for one of our invoices whose signature is wrong:
    another secret, a stale timestamp under the real one, garbage, or (`hows` with
    WEAK_SIGNATURES' names) a weak secret. Journals the receiver's status (retried
    while the receiver is down, since a restart is chaos too, not an answer)."""
    event_id = f"evt_forged_{secrets.token_hex(8)}"
    payload = json.dumps(_event(event_id, invoice_id)).encode()
    how = rng.choice(hows)
    now = int(time.time())
    if how == "other_secret":
        header = sign(payload, "whsec_" + secrets.token_hex(16), now)
    elif how == "stale":
        header = sign(payload, real_secret, now - STALE_SECONDS)
    elif how in WEAK_SIGNATURES:
        header = sign(payload, WEAK_SIGNATURES[how], now)
    else:
        header = f"t={now},v1={secrets.token_hex(32)}"
    status = post_event(receiver_url, payload, header)
    journal.note("forged_webhook", event_id=event_id, status=status, how=how)


def forge_foreign(
    receiver_url: str,
    journal: Journal,
    real_secret: str,
    rng: random.Random,
    *,
    request_id: str,
    our_invoice_id: str | None,
) -> None:
    """POST a correctly signed `invoice.paid` naming request `request_id` that is not
    ours to apply: another account's, the other mode's (we bill with a test key), or
    one of an invoice Stripe does not have under our key. On a request with an
    invoice it names that invoice (as a Connect endpoint would see it), else a
    foreign one, for a foreign amount. Journals `foreign_webhook`."""
    how = rng.choice(FOREIGN)
    foreign_id = f"in_foreign{secrets.token_hex(10)}"
    invoice_id = our_invoice_id if our_invoice_id and how != "unknown_invoice" else foreign_id
    event_id = f"evt_foreign_{secrets.token_hex(8)}"
    event = _event(event_id, invoice_id, amount=rng.choice([1, 100, 777_700]))
    event["data"]["object"]["metadata"] = {META_REQUEST_ID: request_id}
    if how == "other_account":
        event["account"] = f"acct_{secrets.token_hex(8)}"
    elif how == "other_mode":
        event["livemode"] = True
    payload = json.dumps(event).encode()
    status = post_event(receiver_url, payload, sign(payload, real_secret, int(time.time())))
    journal.note(
        "foreign_webhook",
        event_id=event_id,
        status=status,
        how=how,
        request_id=request_id,
        invoice_id=invoice_id,
    )


def post_event(receiver_url: str, payload: bytes, header: str) -> int:
    """The receiver's status for one delivery; retried while it is down (up to 5 min)."""
    deadline = time.monotonic() + 300
    while True:
        try:
            return httpx.post(
                f"{receiver_url}/webhooks/stripe",
                content=payload,
                headers={"Stripe-Signature": header, "Content-Type": "application/json"},
                timeout=30,
            ).status_code
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _event(event_id: str, invoice_id: str, amount: int = 1) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": "invoice.paid",
        "data": {
            "object": {
                "id": invoice_id,
                "object": "invoice",
                "status": "paid",
                "amount_paid": amount,
                "total": amount,
                "status_transitions": {"paid_at": int(time.time())},
            }
        },
    }
