"""Idempotency keys as Stripe keeps them.

A key is scoped to the API key that sent it. While its first request runs the key is held:
a concurrent request with it gets 409. Once the request has executed, its response (status,
headers, body bytes) is saved and replayed to any later request with the same key and the
same method, path and parameters; different parameters get 400 `idempotency_error`.
Requests that never executed (validation errors, refusals) save nothing, so a corrected
retry with the same key runs. Stripe keeps keys at least 24 hours; `expire()` simulates
that window passing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from stripe_sandbox.errors import (
    idempotency_in_flight,
    idempotency_mismatch,
    invalid,
)

# Stripe rejects longer keys.
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Saved:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    request_id: str


@dataclass
class _Entry:
    fingerprint: str
    saved: Saved | None = None  # None while the first request is still in flight


@dataclass
class IdempotencyStore:
    entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)

    def begin(
        self, account: str, key: str, method: str, path: str, params: dict[str, Any]
    ) -> Saved | None:
        """Hold `key` for this request, or return the response to replay.

        Raises the Stripe error for an over-long key, a key in flight, or a key reused with
        other parameters.
        """
        if len(key) > MAX_KEY_LENGTH:
            raise invalid(
                f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters long.",
                param="Idempotency-Key",
            )
        fingerprint = json.dumps([method, path, params], sort_keys=True)
        entry = self.entries.get((account, key))
        if entry is None:
            self.entries[(account, key)] = _Entry(fingerprint)
            return None
        if entry.saved is None:
            raise idempotency_in_flight()
        if entry.fingerprint != fingerprint:
            raise idempotency_mismatch(key)
        return entry.saved

    def save(self, account: str, key: str, saved: Saved) -> None:
        entry = self.entries.get((account, key))
        if entry is not None:
            entry.saved = saved

    def release(self, account: str, key: str) -> None:
        """Forget a held key whose request did not execute."""
        entry = self.entries.get((account, key))
        if entry is not None and entry.saved is None:
            del self.entries[(account, key)]

    def expire(self) -> int:
        """Forget every saved key (the 24 h window passed); keys in flight stay held."""
        done = [k for k, entry in self.entries.items() if entry.saved is not None]
        for k in done:
            del self.entries[k]
        return len(done)

    def clear(self) -> None:
        self.entries.clear()
