"""Every identifier we hand Stripe, derived from our own ids — never from an attempt.

Deterministic keys are what make a retry, a rerun after a crash, or a second
concurrent run land on the same Stripe object instead of a new one.
"""

from __future__ import annotations

import hashlib
import json
import re

from invoiceflow.stripe_limits import MAX_IDEMPOTENCY_KEY_LENGTH

KEY_PREFIX = "invoiceflow"
# Metadata keys we stamp on Stripe objects so they can be found again without
# our database (and so a human in the Dashboard sees where they came from).
META_REQUEST_ID = "invoiceflow_request_id"
META_CUSTOMER_ID = "invoiceflow_customer_id"
META_SKU = "invoiceflow_sku"
META_LINE = "invoiceflow_line"

# Characters a sku may keep verbatim in its product id. "_" is not among them:
# it marks the hashed form below, so the two forms can never meet.
_PRODUCT_ID_PLAIN = re.compile(r"[A-Za-z0-9-]+")
_PRODUCT_ID_UNSAFE = re.compile(r"[^A-Za-z0-9-]")


def metadata_of(obj: object) -> dict[str, str]:
    """A Stripe object's metadata as a plain dict (the SDK types it loosely)."""
    metadata = getattr(obj, "metadata", None)
    return {str(k): str(v) for k, v in metadata.to_dict().items()} if metadata else {}


def _digest(*parts: object, length: int = 16) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def digest(*parts: object) -> str:
    """A short, stable digest of `parts`, for keys that must name their content."""
    return _digest(*parts)


def idempotency_key(*parts: str) -> str:
    key = ":".join((KEY_PREFIX, *parts))
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        # Only reachable with ids far past our validated lengths; stay deterministic.
        key = f"{KEY_PREFIX}:sha256:{_digest(*parts, length=64)}"
    return key


def request_step_key(request_id: str, step: str) -> str:
    """The key for a write that belongs to one request (invoice create, finalize, send…)."""
    return idempotency_key("request", request_id, step)


def shared_object_key(kind: str, our_id: str, params: dict[str, object]) -> str:
    """The key for a product, price or customer shared by many requests.

    The params' digest is part of the key: Stripe refuses a key reused with other
    params, and two requests may legitimately describe one sku slightly
    differently; they then get "already exists" and adopt the first object.
    """
    return idempotency_key(kind, our_id, _digest(params))


def product_id(sku: str) -> str:
    """Our custom Stripe product id for a sku (Stripe accepts caller-chosen product ids).

    Injective: a sku of letters, digits and "-" is used as it is; any other sku
    becomes its readable part plus "_" and a digest of the whole sku. A plain
    id never contains "_", so "a.b", "a_b" and "a_b_<digest>" get three ids.
    """
    if _PRODUCT_ID_PLAIN.fullmatch(sku):
        return f"{KEY_PREFIX}_{sku}"
    readable = _PRODUCT_ID_UNSAFE.sub("-", sku)
    return f"{KEY_PREFIX}_{readable}_{_digest(sku, length=16)}"


def price_lookup_key(sku: str, currency: str, unit_amount: int) -> str:
    """Prices are immutable in Stripe: a new amount is a new price with a new lookup key."""
    return f"{KEY_PREFIX}:{sku}:{currency}:{unit_amount}"
