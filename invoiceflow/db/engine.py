"""Database engines for SQLite (default) and PostgreSQL, and the session helpers.

Two kinds of session:
- `transaction(engine)`: a read-write transaction. On SQLite it starts with
  BEGIN IMMEDIATE, so two processes racing for the same request serialise on
  the write lock up front instead of deadlocking when a reader later tries to
  write. The threads of one process queue for it on a Python lock first:
  SQLite's own busy handler polls with sleeps of up to 100 ms, which kept a
  billing run's worker threads waiting most of their time for a lock that is
  held for a millisecond. On PostgreSQL, row locks (SELECT … FOR UPDATE) do
  the same per request.
- `reading(engine)`: a read-only session, in autocommit on both backends. On
  SQLite no BEGIN at all: each statement is its own implicit read transaction,
  which under WAL never takes the write lock, so a paused or slow reader can
  never block another run's writes. On PostgreSQL under READ COMMITTED each
  statement takes its own snapshot inside a transaction too, so BEGIN and
  ROLLBACK bought nothing but two round trips; on SQLite, a BEGIN and a
  ROLLBACK through SQLAlchemy per read.

Waits are bounded on both backends: a stalled transaction (a paused process,
a hung disk) makes the others fail after a bounded time with a clear error
instead of holding them past their patience and their lease.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlmodel import Session, create_engine

from invoiceflow.db.writes import begin_writes_immediately, reads_unbegun, writer

# How long a SQLite connection waits for another process's write lock before
# failing. Our transactions are milliseconds long; 30 s only matters when a
# disk stalls, and failing then is better than waiting forever.
SQLITE_BUSY_TIMEOUT_SECONDS = 30
# PostgreSQL: how long a statement may wait for a row lock, how long any
# statement may run, and how long a session may sit idle inside a transaction
# before the server ends it (and releases its locks). The last one is what
# frees the requests a SIGSTOPped or hung process was holding.
PG_LOCK_TIMEOUT_MS = 15_000
PG_STATEMENT_TIMEOUT_MS = 60_000
PG_IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
# A pooled PostgreSQL connection idle longer than this is pinged before use (one
# that was just used is not: pinging every checkout, as pool_pre_ping does, was
# a round trip per transaction, twenty per invoice in a billing run).
PG_PING_AFTER_IDLE_SECONDS = 2.0

# SQLite allows one writer per database file: the threads of this process take
# turns here, in order, instead of in SQLite's sleeping busy handler.
_sqlite_writers: dict[str, threading.RLock] = {}
_sqlite_writers_lock = threading.Lock()

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own
        # transaction handling would defer it to the first write).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # WAL's recommended durability: a commit is safe from a crash of the
        # process (what the tests SIGKILL), and only a power loss may roll back
        # the last commits — then the run looks like one that died before them,
        # and a rerun in a new process finds in Stripe whatever they recorded
        # (nothing is "fresh" there, so every first write looks first). FULL
        # fsynced every commit under the write lock: most of a run's DB time.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.close()

    begin_writes_immediately(engine)


def make_engine(url: str) -> Engine:
    """A new engine for `url`; most callers want the shared `get_engine`."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )
        _configure_sqlite(engine)
        return engine
    options = (
        f"-c lock_timeout={PG_LOCK_TIMEOUT_MS} -c statement_timeout={PG_STATEMENT_TIMEOUT_MS} "
        f"-c idle_in_transaction_session_timeout={PG_IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    )
    engine = create_engine(
        url,
        pool_size=10,
        max_overflow=10,
        connect_args={"options": options, "connect_timeout": 10},
    )
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """pool_pre_ping for connections that sat idle: one a restarted server (or a
    firewall) dropped is replaced, and the whole pool with it, before any work."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PG_PING_AFTER_IDLE_SECONDS:
            return  # new, or just used
        try:
            engine.dialect.do_ping(dbapi_connection)
            dbapi_connection.rollback()  # the ping opened a transaction
        except Exception as exc:
            raise InvalidatePoolError() from exc


def get_engine(url: str) -> Engine:
    """One engine per URL per process, with the schema brought up to date on first use."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            from invoiceflow.db.revision import at_head
            from invoiceflow.paths import default_database_path, default_database_url

            if url == default_database_url():  # only our own default: never guess a user's
                default_database_path().parent.mkdir(parents=True, exist_ok=True)

            engine = make_engine(url)
            if not at_head(engine):  # a current schema needs no Alembic (half a second)
                from invoiceflow.db.migrate import upgrade

                upgrade(engine)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A read-write session whose work commits on success and rolls back on any error."""
    with (
        _writer_turn(engine),
        Session(writer(engine), expire_on_commit=False) as session,
        session.begin(),
    ):
        yield session


@contextmanager
def _writer_turn(engine: Engine) -> Iterator[None]:
    """On SQLite, this process's turn to write (other processes still meet busy_timeout).

    Reentrant: a thread nesting two transactions (which SQLite would refuse
    after its busy timeout anyway) is not deadlocked here forever.
    """
    if engine.dialect.name != "sqlite":
        yield
        return
    with _sqlite_writers_lock:
        turn = _sqlite_writers.setdefault(str(engine.url), threading.RLock())
    with turn:
        yield


@cache
def reader(engine: Engine) -> Engine:
    """The same engine, its sessions in autocommit (see `reading`)."""
    if engine.dialect.name == "sqlite":
        return reads_unbegun(engine)
    if engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def reading(engine: Engine) -> Iterator[Session]:
    """A read-only session: never takes SQLite's write lock; objects stay usable after."""
    with Session(reader(engine), expire_on_commit=False) as session:
        yield session


def table_of(model: type[Any]) -> Table:
    """A model's Core table. A statement on it is plain Core: executed in a session it
    skips the ORM's insert/update path and its autoflush (audit rows, write intents)."""
    table = model.__table__
    assert isinstance(table, Table), f"{model.__name__} is not a table model"
    return table


def upsert_into(session: Session, model: type[Any] | Table) -> Any:
    """An INSERT with ON CONFLICT clauses for the session's backend (both have them)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model)


def insert_if_absent(session: Session, model: type[Any], key: str, **values: Any) -> bool:
    """INSERT … ON CONFLICT (key) DO NOTHING, in the caller's transaction; True if inserted.

    Two runs inserting the same first row at once both succeed; the caller then
    reads the row (under a lock) and works with whichever insert won.
    """
    # RETURNING, not rowcount: an ORM session reports -1 rows for this statement.
    result = session.execute(
        upsert_into(session, model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[key])
        .returning(getattr(model, key))
    )
    return result.first() is not None
