"""GCRA, the generic cell rate algorithm: one number per limit, the theoretical
arrival time (TAT) of the next call.

A call reserves a slot by moving the TAT forward one interval (1 / rate) from
whichever is later, the TAT or now; it may go once now has caught up with the
TAT minus the burst allowance. Because the reservation is taken before the
wait, a waiting caller holds its slot and callers are served in order. A 429
moves the TAT itself into the future (`push_back`), which holds back every
caller sharing the limit, not only the one that met it.

The stores below keep the TAT where all sharers see it (a dict, a PostgreSQL
row, a Redis key) and change it in one atomic step on the store's own clock;
this module is only the arithmetic they share.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Budget:
    """One of Stripe's limits: `rate` calls a second, `burst` of them at once."""

    name: str
    rate: float
    burst: int

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    @property
    def allowance(self) -> float:
        """How far ahead of the TAT a call may go: the burst, in seconds."""
        return self.burst * self.interval


def reserve(tat: float, now: float, budget: Budget) -> tuple[float, float]:
    """The new TAT after one more call, and how long that call must wait."""
    new_tat = max(tat, now) + budget.interval
    return new_tat, max(0.0, new_tat - budget.allowance - now)


def pushed(tat: float, now: float, seconds: float, budget: Budget) -> float:
    """The TAT after a 429: nobody's next call before `seconds` from now."""
    return max(tat, now + seconds + budget.allowance)


class RateLimitStoreDown(Exception):
    """The shared store could not be reached, so no slot was taken and no Stripe call
    may go (the limiter fails closed). Temporary: the call is retried with backoff,
    and a run that still meets it ends the request as `temporary`, resumable.

    The message names the backend's own error (its class and first line), never the
    store's URL, which may hold a password.
    """

    def __init__(self, what: str, cause: BaseException) -> None:
        first_line = (str(cause).splitlines() or [""])[0][:200]
        super().__init__(
            f"rate limit store unreachable ({what}: {type(cause).__name__}: {first_line}); "
            "no Stripe call was made"
        )


class Store(Protocol):
    """Where the TATs live; each method is one atomic step on the store's clock.

    A store that cannot be reached raises `RateLimitStoreDown`, nothing else.
    """

    def reserve(self, budget: Budget) -> float:
        """Take the next slot of `budget`; return the seconds to wait before using it."""
        ...

    def push_back(self, budget: Budget, seconds: float) -> None: ...

    def close(self) -> None: ...


class MemoryStore:
    """This process only: threads share it; other processes don't see it."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._lock = threading.Lock()

    def reserve(self, budget: Budget) -> float:
        with self._lock:
            now = time.monotonic()
            self._tats[budget.name], wait = reserve(self._tats.get(budget.name, now), now, budget)
            return wait

    def push_back(self, budget: Budget, seconds: float) -> None:
        with self._lock:
            now = time.monotonic()
            self._tats[budget.name] = pushed(self._tats.get(budget.name, now), now, seconds, budget)

    def close(self) -> None:
        pass
