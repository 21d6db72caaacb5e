"""One Stripe rate limit shared by every thread, process and host that bills.

`limiter()` is this process's limiter, built from the settings
(INVOICEFLOW_STRIPE_RATE, INVOICEFLOW_RATE_LIMIT_BACKEND); `acquire(kind)`
blocks until one more call fits Stripe's budget, and `push_back(seconds)`
holds every sharer back after a 429. See `gcra` for the algorithm. A store
that cannot be reached raises `RateLimitStoreDown`: no slot, no call.

Imports go one way: `invoiceflow.retry` uses this package, never the reverse.
"""

from __future__ import annotations

import threading

from invoiceflow.ratelimit.gcra import Budget, MemoryStore, RateLimitStoreDown, Store
from invoiceflow.ratelimit.limiter import Kind, Limiter, Unlimited
from invoiceflow.settings import Settings, get_settings

__all__ = [
    "Budget",
    "Kind",
    "Limiter",
    "RateLimitStoreDown",
    "Unlimited",
    "build",
    "limiter",
    "reset_limiter",
]

# Stripe's Search API allows 20 calls a second in either mode.
SEARCH_RATE = 20.0
# A few calls may go at once. Small, so a limit at exactly Stripe's rate never
# meets Stripe's own bucket empty.
BURST = 3

_lock = threading.Lock()
_current: tuple[Settings, Limiter | Unlimited] | None = None


def build(settings: Settings) -> Limiter | Unlimited:
    """A new limiter for these settings (most callers want the shared `limiter()`)."""
    rate = settings.stripe_rate_per_second()
    if rate is None:
        return Unlimited()
    # Stripe limits each account; we name the limit by where Stripe is (each
    # sandbox is an account of its own) and the key's mode, never by the key:
    # the secret must not reach a table or Redis.
    where = f"{settings.stripe_api_base} " if settings.stripe_api_base else ""
    mode = settings.stripe_mode()
    api = Budget(f"{where}{mode}:api", rate, BURST)
    search = Budget(f"{where}{mode}:search", min(rate, SEARCH_RATE), BURST)
    return Limiter(_store(settings), api, search)


def _store(settings: Settings) -> Store:
    backend = settings.rate_limit_store()
    if backend == "memory":
        return MemoryStore()
    if backend == "postgres":
        from invoiceflow.ratelimit.postgres import PostgresStore

        return PostgresStore(settings.database_url)
    from invoiceflow.ratelimit.redis_store import RedisStore

    return RedisStore(backend)


def limiter() -> Limiter | Unlimited:
    """This process's limiter; rebuilt when the settings were reloaded."""
    global _current
    settings = get_settings()
    with _lock:
        if _current is None or _current[0] is not settings:
            if _current is not None:
                _current[1].close()
            _current = (settings, build(settings))
        return _current[1]


def reset_limiter() -> None:
    """Forget this process's limiter (tests; after the environment changed)."""
    global _current
    with _lock:
        if _current is not None:
            _current[1].close()
        _current = None
