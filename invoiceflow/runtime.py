"""What every step needs — settings, the database engine, the Stripe client —
built once per process from the environment.

Prefect tasks receive only plain ids (request id, lease owner) as parameters,
so nothing secret or unserialisable reaches Prefect's parameter store; each
task looks up the process's runtime instead.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import stripe
from sqlalchemy.engine import Engine

from invoiceflow.db.engine import get_engine
from invoiceflow.settings import Settings, get_settings
from invoiceflow.stripe_api import make_client


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    stripe: stripe.StripeClient


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            settings = get_settings()
            _runtime = Runtime(settings, get_engine(settings.database_url), make_client(settings))
        return _runtime


def reset_runtime() -> None:
    """Forget the cached runtime (after the environment changed: tests, the demo)."""
    global _runtime
    with _lock:
        _runtime = None
        get_settings.cache_clear()
