"""Where a sweep starts: `--since`, the event cursor, or our oldest unfinished request.

Stripe's clock throughout (epoch seconds): the cursor is the `created` of the
newest event applied, and sweeps start a little before it, because events
created within the same second (or listed a moment late) must not slip
between two sweeps. Applying one twice is harmless: the inbox refuses it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.engine import Engine

from invoiceflow.db.engine import insert_if_absent, reading, transaction
from invoiceflow.db.models import BillingRequestRow, SyncCursor, utcnow
from invoiceflow.db.utc import as_utc
from invoiceflow.stripe_limits import EVENT_RETENTION

CURSOR_NAME = "stripe-events"
# How far before the cursor a sweep starts again.
OVERLAP_SECONDS = 300
# With no cursor yet, how far before our oldest unfinished request (our clock,
# Stripe's may differ a little).
FIRST_SWEEP_MARGIN = timedelta(days=1)

_AGE = re.compile(r"(\d+)([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


class BadSince(ValueError):
    """A `--since` we cannot read; the message names the option and the fix."""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`2026-11-01`, an ISO date-time, or an age (`7d`, `12h`, `30m`) → a UTC moment."""
    now = now or utcnow()
    value = text.strip()
    age = _AGE.fullmatch(value)
    if age:
        moment = now - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
    else:
        try:
            moment = (
                datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
                if len(value) == 10
                else datetime.fromisoformat(value)
            )
        except ValueError:
            raise BadSince(
                f"--since must be a date (2026-11-01), a date-time (2026-11-01T08:00Z) "
                f"or an age (7d, 12h, 30m), got {text!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    if moment > now:
        raise BadSince(f"--since must not be in the future, got {text!r}")
    return moment


def read_cursor(engine: Engine) -> int | None:
    with reading(engine) as session:
        cursor = session.get(SyncCursor, CURSOR_NAME)
        return cursor.position if cursor else None


def advance_cursor(engine: Engine, position: int) -> bool:
    """Move the cursor forward to `position` (never back); True if it moved.

    Two sweeps at once both get here: the row lock orders them and the
    larger position stays.
    """
    with transaction(engine) as session:
        if insert_if_absent(
            session, SyncCursor, "name", name=CURSOR_NAME, position=position, updated_at=utcnow()
        ):
            return True
        cursor = session.get(SyncCursor, CURSOR_NAME, with_for_update=True, populate_existing=True)
        assert cursor is not None
        if cursor.position >= position:
            return False
        cursor.position = position
        cursor.updated_at = utcnow()
        session.add(cursor)
        return True


def event_start(
    since: datetime | None, cursor: int | None, unfinished: Sequence[BillingRequestRow]
) -> int | None:
    """Stripe's `created[gte]` for the event sweep; None when there is nothing to sweep for."""
    if since is not None:
        return int(since.timestamp())
    if cursor is not None:
        return cursor - OVERLAP_SECONDS
    return oldest_request_start(unfinished)


def oldest_request_start(rows: Sequence[BillingRequestRow]) -> int | None:
    """A day before the oldest of `rows` was received, in epoch seconds."""
    if not rows:
        return None
    oldest = min(as_utc(row.created_at) for row in rows)
    return int((oldest - FIRST_SWEEP_MARGIN).timestamp())


def past_retention(start: int, now: datetime | None = None) -> bool:
    return datetime.fromtimestamp(start, UTC) < (now or utcnow()) - EVENT_RETENTION
