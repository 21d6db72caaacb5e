"""Stripe-Signature verification against every secret accepted during a rotation.

The SDK's `stripe.WebhookSignature.verify_header` takes one secret and raises
the same error for "stale" and "no match"; this is the same scheme (HMAC-SHA256
of `<t>.<body>`, compared in constant time) over a list of secrets, with a
reason a caller can return. No message ever contains a secret or a signature.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

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
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("malformed Stripe-Signature timestamp") from None
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError("malformed Stripe-Signature header")
    if timestamp < (time.time() if now is None else now) - tolerance:
        raise SignatureError("Stripe-Signature timestamp is outside the tolerance")
    signed = str(timestamp).encode() + b"." + payload
    # Every candidate is checked; compare_digest keeps each comparison constant-time.
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        for signature in signatures:
            matched |= hmac.compare_digest(expected, signature)
    if not matched:
        raise SignatureError("no Stripe-Signature matches a configured secret")
