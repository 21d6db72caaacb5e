"""Marking an engine's transactions as writes, which SQLite begins with BEGIN IMMEDIATE.

Below both `engine` (which opens a database and migrates it) and `migrate` (whose
upgrade is such a write): the one direction is engine -> migrate -> writes.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

# The execution option that marks a connection's transactions as writes.
_WRITE_OPTION = "invoiceflow_write"


@cache
def writer(engine: Engine) -> Engine:
    """The same engine (pool, listeners), its transactions marked as writes."""
    return engine.execution_options(**{_WRITE_OPTION: True})


def begin_writes_immediately(engine: Engine) -> None:
    """On a SQLite engine whose driver leaves BEGIN to SQLAlchemy: a write takes the
    write lock up front (BEGIN IMMEDIATE), a read begins deferred (plain BEGIN)."""

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        writes = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")
