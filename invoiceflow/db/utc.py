"""Datetimes read back from the ledger, always timezone-aware.

SQLite hands back naive datetimes for timezone-aware columns (PostgreSQL does
not); we write every one in UTC, so a naive one read back is UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def as_utc(moment: datetime) -> datetime: ...
@overload
def as_utc(moment: None) -> None: ...
def as_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
