"""Stripe-Signature verification against every secret accepted during a rotation.

The HMAC is the SDK's (`stripe.WebhookSignature.verify_header`, constant-time
compare, v1 scheme only), tried with each secret in turn. What stays here is
what the SDK does not give: a list of secrets, a reason a caller can return
(its one exception class says "stale" and "no match" alike, in prose), and a
clock a test can set. No message ever contains a secret or a signature.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import stripe

# Stripe's libraries reject signatures older than this (replay protection).
TOLERANCE_SECONDS = 300
_PREFIX = "whsec_"


class SignatureError(ValueError):
    """The request is not a fresh event signed with one of our secrets."""


def verify(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Return if `header` holds a v1 signature of `payload` by any of `secrets`, else raise."""
    # Settings refuse a weak secret; this is the last line: an empty one (or the
    # bare public prefix) is a key anyone can sign with, so nothing is accepted.
    if not secrets or any(not secret.removeprefix(_PREFIX).strip() for secret in secrets):
        raise SignatureError("a configured webhook signing secret is empty; nothing is accepted")
    if not header:
        raise SignatureError("missing Stripe-Signature header")
    timestamp = _timestamp(header)
    if timestamp < (time.time() if now is None else now) - tolerance:
        raise SignatureError("Stripe-Signature timestamp is outside the tolerance")
    try:
        text = payload.decode()  # what the SDK signs over; Stripe's events are UTF-8 JSON
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8, so not a Stripe event") from None
    if not any(_signed_with(text, header, secret) for secret in secrets):
        raise SignatureError("no Stripe-Signature matches a configured secret")


def _signed_with(payload: str, header: str, secret: str) -> bool:
    try:
        # tolerance=None: the age was checked above, against a clock tests can set.
        return bool(stripe.WebhookSignature.verify_header(payload, header, secret, None))
    except stripe.SignatureVerificationError:
        return False


def _timestamp(header: str) -> int:
    """The header's `t=`, once it is known to carry a v1 signature at all (else: which part
    is malformed, a reason the SDK would only give in its prose)."""
    timestamp: int | None = None
    has_v1 = False
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            if timestamp is not None:  # the SDK signs with the first: the age must be its
                raise SignatureError("malformed Stripe-Signature header (two timestamps)")
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("malformed Stripe-Signature timestamp") from None
        elif name == "v1" and value:
            has_v1 = True
    if timestamp is None or not has_v1:
        raise SignatureError("malformed Stripe-Signature header")
    return timestamp
