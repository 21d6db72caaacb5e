"""The TATs in our PostgreSQL ledger, shared by every process and host using it.

Table `stripe_rate_limit` (migration 0005): one row per limit, `tat` in epoch
seconds of the database's clock. Trust: ours and disposable — a lost or stale
row only lets a burst through, which Stripe answers with a 429 that pushes
everyone back; it is never a record of anything.

Each reservation is ONE statement (an upsert with GREATEST) on an autocommit
connection: the row lock is held for microseconds, never across a wait, and
`clock_timestamp()` is the one clock every host reads, so skew between
machines cannot let two of them spend the same slot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from invoiceflow.ratelimit.gcra import Budget, RateLimitStoreDown

# Upsert the row to max(tat, now) + interval and say how long this caller waits.
# `now` is read once, so the wait is measured on the same instant as the TAT.
_RESERVE = text(
    """
    WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::double precision AS now)
    INSERT INTO stripe_rate_limit AS limit_row (name, tat)
    SELECT :name, clock.now + :interval FROM clock
    ON CONFLICT (name) DO UPDATE
        SET tat = GREATEST(limit_row.tat + :interval, EXCLUDED.tat)
    RETURNING GREATEST(0, limit_row.tat - :allowance - (SELECT now FROM clock))
    """
)
# After a 429: nobody's next call before now + seconds (plus the burst allowance).
_PUSH_BACK = text(
    """
    INSERT INTO stripe_rate_limit AS limit_row (name, tat)
    VALUES (:name, extract(epoch FROM clock_timestamp()) + :ahead)
    ON CONFLICT (name) DO UPDATE SET tat = GREATEST(limit_row.tat, EXCLUDED.tat)
    """
)


class PostgresStore:
    def __init__(self, url: str) -> None:
        from invoiceflow.db.engine import get_engine

        get_engine(url)  # brings the schema (and our table) up to date
        # Its own small pool, autocommit: a reservation never joins, waits on
        # or holds open a business transaction.
        self._engine: Engine = create_engine(
            url,
            isolation_level="AUTOCOMMIT",
            pool_pre_ping=True,
            pool_size=4,
            max_overflow=16,
            connect_args={"connect_timeout": 10, "options": "-c statement_timeout=10000"},
        )

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as connection:
                yield connection
        except (OperationalError, InterfaceError) as exc:
            # Unreachable, restarting, or past statement_timeout: no slot, so no call.
            # The driver's own error, not SQLAlchemy's (which quotes the statement).
            raise RateLimitStoreDown("PostgreSQL", exc.orig or exc) from exc

    def reserve(self, budget: Budget) -> float:
        with self._connection() as connection:
            wait = connection.execute(
                _RESERVE,
                {"name": budget.name, "interval": budget.interval, "allowance": budget.allowance},
            ).scalar_one()
        return float(wait)

    def push_back(self, budget: Budget, seconds: float) -> None:
        with self._connection() as connection:
            connection.execute(
                _PUSH_BACK, {"name": budget.name, "ahead": seconds + budget.allowance}
            )

    def close(self) -> None:
        self._engine.dispose()
