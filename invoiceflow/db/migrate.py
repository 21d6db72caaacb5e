"""Schema migrations with Alembic, run from code (no alembic.ini to find).

`invoiceflow db upgrade` and the first use of a database (`engine.get_engine`) both
call `upgrade`; this module never opens a database itself (engine -> migrate, one way).
Concurrent first uses are safe: PostgreSQL serialises them with an advisory
lock, SQLite with the BEGIN IMMEDIATE write lock every transaction takes.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from invoiceflow.db.writes import writer

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Any fixed 64-bit number: identifies "invoiceflow schema upgrade" among
# PostgreSQL advisory locks other software may take on the same database.
_PG_UPGRADE_LOCK_ID = 7_246_511_009


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision; a no-op when it is already there."""
    if current_revision(engine) == head_revision():
        return
    # A write transaction (BEGIN IMMEDIATE on SQLite): concurrent first uses
    # of one database take turns instead of racing to create the tables.
    with writer(engine).begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_UPGRADE_LOCK_ID}
            )
        command.upgrade(_config(connection), "head")
