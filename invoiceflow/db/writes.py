"""Marking an engine's transactions as writes, which SQLite begins with BEGIN IMMEDIATE.

Below both `engine` (which opens a database and migrates it) and `migrate` (whose
upgrade is such a write): the one direction is engine -> migrate -> writes.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

# The execution options that mark a connection's transactions as writes, or
# its sessions as reads that need no transaction at all (see `reads_unbegun`).
_WRITE_OPTION = "invoiceflow_write"
_READ_OPTION = "invoiceflow_read"


@cache
def writer(engine: Engine) -> Engine:
    """The same engine (pool, listeners), its transactions marked as writes."""
    return engine.execution_options(**{_WRITE_OPTION: True})


@cache
def reads_unbegun(engine: Engine) -> Engine:
    """The same SQLite engine, its sessions' statements each in SQLite's own implicit
    transaction: no BEGIN, no ROLLBACK. For `reading` sessions, as PostgreSQL's run
    in autocommit: a read-only session gains nothing from a transaction around its
    statements (each still reads one consistent snapshot, and under WAL never takes
    the write lock), and a paused reader holds no transaction open."""
    return engine.execution_options(**{_READ_OPTION: True})


def begin_writes_immediately(engine: Engine) -> None:
    """On a SQLite engine whose driver leaves BEGIN to SQLAlchemy: a write takes the
    write lock up front (BEGIN IMMEDIATE), a read begins deferred (plain BEGIN),
    a `reads_unbegun` session not at all."""

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get(_READ_OPTION, False):
            return
        # Straight on the driver's connection: SQLAlchemy's statement path (an
        # execution context, cursor events, result) buys nothing for a BEGIN.
        begin = "BEGIN IMMEDIATE" if options.get(_WRITE_OPTION, False) else "BEGIN"
        connection.connection.driver_connection.execute(begin)
