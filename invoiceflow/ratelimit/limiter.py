"""The limiter every Stripe call passes: Stripe's budgets over one shared store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from invoiceflow import progress
from invoiceflow.ratelimit.gcra import Budget, Store

Kind = Literal["api", "search"]

# A wait longer than this is announced: a person watching should know why
# nothing moves (a billing run of thousands is mostly this wait).
ANNOUNCE_AFTER_SECONDS = 5.0


class Limiter:
    """Stripe's global budget and, for Search, its own stricter one on top.

    Stripe: "Calls to certain resources have stricter limits, and also count
    against the basic limits … Search API: 20 read operations per second." So
    a search takes a slot of both.
    """

    def __init__(
        self, store: Store, api: Budget, search: Budget, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.store = store
        self.budgets: dict[Kind, tuple[Budget, ...]] = {"api": (api,), "search": (search, api)}
        self._sleep = sleep

    def acquire(self, kind: Kind = "api") -> float:
        """Block until the caller may make one call of `kind`; return the seconds waited."""
        waited = 0.0
        for budget in self.budgets[kind]:
            wait = self.store.reserve(budget)
            if wait > ANNOUNCE_AFTER_SECONDS:
                progress.log.warning(
                    "waiting %.0fs for Stripe's rate limit (%s/s, shared)", wait, f"{budget.rate:g}"
                )
            if wait > 0:
                self._sleep(wait)
                waited += wait
        return waited

    def push_back(self, seconds: float) -> None:
        """Stripe said 429: hold back every sharer's next call for `seconds`."""
        for budget in {b.name: b for pair in self.budgets.values() for b in pair}.values():
            self.store.push_back(budget, seconds)

    def close(self) -> None:
        self.store.close()


class Unlimited:
    """INVOICEFLOW_STRIPE_RATE=off: calls go at once; 429s are only retried."""

    def acquire(self, kind: Kind = "api") -> float:
        return 0.0

    def push_back(self, seconds: float) -> None:
        pass

    def close(self) -> None:
        pass
