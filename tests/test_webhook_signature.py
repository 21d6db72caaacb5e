"""Stripe-Signature checks against the sandbox's own signer (the scheme Stripe's SDK verifies)."""

from __future__ import annotations

import time

import pytest
import stripe

from invoiceflow.sandbox.webhooks import sign
from invoiceflow.webhooks.signature import SignatureError, verify

BODY = b'{"id": "evt_1", "object": "event"}'
OLD, NEW = "whsec_old_secret", "whsec_new_secret"


def test_stripe_sdk_and_we_agree_on_a_signature() -> None:
    header = sign(BODY, OLD, int(time.time()))
    stripe.WebhookSignature.verify_header(BODY.decode(), header, OLD, 300)
    verify(BODY, header, [OLD])


def test_rotation_header_with_two_v1_signatures_matches_either_secret() -> None:
    now = int(time.time())
    both = f"{sign(BODY, OLD, now)},v1={sign(BODY, NEW, now).split('v1=')[1]},v0=ignored"
    verify(BODY, both, [NEW])
    verify(BODY, both, [OLD])
    verify(BODY, sign(BODY, NEW, now), [OLD, NEW])
    with pytest.raises(SignatureError, match="no Stripe-Signature matches"):
        verify(BODY, both, ["whsec_neither"])


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("t=abc,v1=00", "malformed Stripe-Signature timestamp"),
        ("t=1", "malformed Stripe-Signature header"),
        ("v1=00", "malformed Stripe-Signature header"),
    ],
)
def test_malformed_headers(header: str | None, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify(BODY, header, [OLD])


def test_tolerance_is_300_seconds() -> None:
    now = int(time.time())
    verify(BODY, sign(BODY, OLD, now - 290), [OLD], now=now)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(BODY, sign(BODY, OLD, now - 301), [OLD], now=now)
