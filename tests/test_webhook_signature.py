"""Stripe-Signature checks against the sandbox's own signer (the scheme Stripe's SDK verifies).

Each acceptance is paired with its near miss (one byte of the body, another secret, one
second past the tolerance) so that a verifier that accepted everything, or refused
everything, fails here.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

import pytest
import stripe

from invoiceflow.webhooks.signature import SignatureError, verify
from stripe_sandbox.webhooks import sign

BODY = b'{"id": "evt_1", "object": "event"}'
TAMPERED = b'{"id": "evt_2", "object": "event"}'
OLD, NEW = "whsec_old_secret", "whsec_new_secret"


def _accepted(body: bytes, header: str, secrets: Sequence[str], now: float | None = None) -> bool:
    """Whether `verify` lets the request through; a refusal must say why."""
    try:
        verify(body, header, secrets, now=now)
    except SignatureError as error:
        assert str(error), "a refusal names its reason"
        return False
    return True


def _sdk_accepts(body: bytes, header: str, secret: str) -> bool:
    try:
        return bool(stripe.WebhookSignature.verify_header(body.decode(), header, secret, 300))
    except stripe.SignatureVerificationError:
        return False


def test_stripe_sdk_and_we_agree_on_a_signature() -> None:
    now = int(time.time())
    header = sign(BODY, OLD, now)
    # The sandbox signs as Stripe documents it: v1 = HMAC-SHA256(secret, "<t>.<body>").
    expected = hmac.new(OLD.encode(), f"{now}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={now},v1={expected}"
    assert _sdk_accepts(BODY, header, OLD) is True
    assert _accepted(BODY, header, [OLD]) is True
    # The near misses: both the SDK and we refuse them.
    assert _sdk_accepts(TAMPERED, header, OLD) is False
    assert _accepted(TAMPERED, header, [OLD]) is False
    assert _sdk_accepts(BODY, header, NEW) is False
    assert _accepted(BODY, header, [NEW]) is False


def test_rotation_header_with_two_v1_signatures_matches_either_secret() -> None:
    now = int(time.time())
    both = f"{sign(BODY, OLD, now)},v1={sign(BODY, NEW, now).split('v1=')[1]},v0=ignored"
    assert _accepted(BODY, both, [NEW]) is True
    assert _accepted(BODY, both, [OLD]) is True
    assert _accepted(BODY, sign(BODY, NEW, now), [OLD, NEW]) is True
    assert _accepted(BODY, sign(BODY, OLD, now), [OLD, NEW]) is True
    assert _accepted(TAMPERED, both, [OLD, NEW]) is False
    assert _accepted(BODY, sign(BODY, "whsec_neither", now), [OLD, NEW]) is False
    with pytest.raises(SignatureError, match="no Stripe-Signature matches"):
        verify(BODY, both, ["whsec_neither"])


def test_only_v1_signatures_count() -> None:
    """A matching signature under another scheme name (v0) is not a v1 signature."""
    now = int(time.time())
    v1 = sign(BODY, OLD, now).split("v1=")[1]
    assert _accepted(BODY, f"t={now},v1={v1}", [OLD]) is True
    with pytest.raises(SignatureError, match="malformed Stripe-Signature header"):
        verify(BODY, f"t={now},v0={v1}", [OLD])


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
    assert _accepted(BODY, sign(BODY, OLD, now - 300), [OLD], now=now) is True
    with pytest.raises(SignatureError, match="tolerance"):
        verify(BODY, sign(BODY, OLD, now - 301), [OLD], now=now)


def test_a_second_timestamp_cannot_freshen_an_old_signature() -> None:
    """The SDK verifies against the header's first `t=`: a fresh one appended to a captured
    old header must not pass the age check in its place (a replay)."""
    now = int(time.time())
    captured = sign(BODY, OLD, now - 3600)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(BODY, captured, [OLD], now=now)
    with pytest.raises(SignatureError, match="malformed Stripe-Signature header"):
        verify(BODY, f"{captured},t={now}", [OLD], now=now)


def test_a_body_that_is_not_utf8_is_refused_with_a_reason() -> None:
    now = int(time.time())
    body = b"\xff" + BODY  # signed all the same: the refusal is the body's, not the HMAC's
    with pytest.raises(SignatureError, match="not UTF-8"):
        verify(body, sign(body, OLD, now), [OLD])
