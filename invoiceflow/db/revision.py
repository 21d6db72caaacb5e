"""Whether a database's schema is at the newest migration, without importing Alembic.

Every use of a database checks its schema (`engine.get_engine`); Alembic's own
check costs half a second of imports, which `invoiceflow status` paid on every
call for a schema that is almost always current. Our migrations are named
after their revision (`0005_stripe_rate_limit.py` is revision "0005", one line
of history, `tests/test_first_hour.py` holds both), so the newest file names
the head: a database whose `alembic_version` says exactly that is current.
Anything else — a missing table, another revision, an unreadable database —
goes to Alembic (`migrate.upgrade`), which migrates or reports the real error.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

VERSIONS_DIR = Path(__file__).with_name("migrations") / "versions"


@cache
def head_by_file_name() -> str | None:
    """The newest migration's revision, as its file name says ("0005")."""
    revisions = sorted(path.name.split("_", 1)[0] for path in VERSIONS_DIR.glob("[0-9]*_*.py"))
    return revisions[-1] if revisions else None


def at_head(engine: Engine) -> bool:
    """True only when the database's stored revision is the newest migration's."""
    head = head_by_file_name()
    if head is None:
        return False
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:  # no table yet, or the database itself: Alembic's path says which
        return False
    return [row[0] for row in stored] == [head]
