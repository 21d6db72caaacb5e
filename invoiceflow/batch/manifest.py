"""A billing run's manifest: which source it bills, and what each entry came to.

Created on a run's first attempt with one row per entry; every later attempt
under the same run id resumes it and processes only the entries that have not
finished (outcome NULL: never ran, or the process died mid-way) or may still
succeed (`outcome.RETRYABLE`). The request's own progress stays in the
ledger, the single truth: a resumed entry picks up where its request stands,
so nothing is billed twice whatever the manifest says.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from invoiceflow.batch.outcome import RETRYABLE, Outcome
from invoiceflow.batch.source import Source
from invoiceflow.db.engine import insert_if_absent, reading, transaction
from invoiceflow.db.models import BillingRun, BillingRunItem, utcnow

RUN_ID_MAX_LENGTH = 128
_RUN_ID = re.compile(r"[a-z0-9][a-z0-9._:-]*", re.IGNORECASE)
_UNSAFE = re.compile(r"[^a-z0-9]+")


class ManifestError(Exception):
    """The run id cannot stand for this source; one line naming the fix."""


@dataclass(frozen=True)
class Started:
    """A run's attempt: its manifest and the entries this attempt processes."""

    run: BillingRun
    todo: list[int]  # positions


def default_run_id(source: Source) -> str:
    """The same content → the same run id: rerunning a source resumes its run."""
    label = _UNSAFE.sub("-", source.label.lower()).strip("-")[:60] or "batch"
    return f"{label}-{source.digest[:12]}"


def check_run_id(run_id: str) -> str:
    if len(run_id) > RUN_ID_MAX_LENGTH or not _RUN_ID.fullmatch(run_id):
        raise ManifestError(
            f"--run-id {run_id!r} must be 1-{RUN_ID_MAX_LENGTH} letters, digits, '.', '_', "
            "':' or '-', starting with a letter or digit"
        )
    return run_id


def check_resumable(engine: Engine, run_id: str, source: Source) -> BillingRun | None:
    """The existing manifest of `run_id` (None if new); raises if it bills other content."""
    with reading(engine) as session:
        run = session.get(BillingRun, run_id)
    if run is not None and run.source_digest != source.digest:
        raise ManifestError(
            f"run id {run_id!r} already bills other content ({run.source}, digest "
            f"{run.source_digest[:12]}); use a new --run-id for this source, or omit "
            "--run-id to derive one from its content"
        )
    return run


def start(engine: Engine, run_id: str, source: Source) -> Started:
    """Create the manifest (first attempt) or resume it; count the attempt.

    Entries that are broken in the source are finished right here as `invalid`:
    there is nothing to run for them.
    """
    check_resumable(engine, run_id, source)
    with transaction(engine) as session:
        created = insert_if_absent(
            session,
            BillingRun,
            "run_id",
            run_id=run_id,
            source=source.name[:1000],
            source_digest=source.digest,
            total=len(source.entries),
            attempts=0,
            created_at=utcnow(),
        )
        run = session.get(BillingRun, run_id, with_for_update=True, populate_existing=True)
        assert run is not None
        if run.source_digest != source.digest:  # another process created it meanwhile
            raise ManifestError(f"run id {run_id!r} already bills other content; use a new one")
        run.attempts += 1
        run.finished_at = None
        session.add(run)
        if created:
            session.add_all(_items(run_id, source))
        else:
            # Retryable outcomes are from an earlier attempt: this one runs them again.
            session.execute(
                update(BillingRunItem)
                .where(col(BillingRunItem.run_id) == run_id)
                .where(col(BillingRunItem.outcome).in_([o.value for o in RETRYABLE]))
                .values(outcome=None, updated_at=utcnow())
            )
    return Started(run, unfinished(engine, run_id))


def _items(run_id: str, source: Source) -> list[BillingRunItem]:
    items = []
    for entry in source.entries:
        request = entry.request
        items.append(
            BillingRunItem(
                run_id=run_id,
                position=entry.position,
                request_id=entry.request_id[:128] if entry.request_id else None,
                currency=request.currency if request else None,
                total_amount=request.total_amount() if request else None,
                outcome=Outcome.INVALID.value if entry.problem else None,
                reason=entry.problem[:2000] if entry.problem else None,
            )
        )
    return items


def unfinished(engine: Engine, run_id: str) -> list[int]:
    """Positions a (re)run processes: never finished, or worth another try."""
    with reading(engine) as session:
        statement = (
            select(BillingRunItem.position)
            .where(BillingRunItem.run_id == run_id)
            .where(
                col(BillingRunItem.outcome).is_(None)
                | col(BillingRunItem.outcome).in_([o.value for o in RETRYABLE])
            )
            .order_by(col(BillingRunItem.position))
        )
        return list(session.exec(statement).all())


def record(
    engine: Engine, run_id: str, position: int, outcome: Outcome, reason: str | None
) -> None:
    with transaction(engine) as session:
        session.execute(
            update(BillingRunItem)
            .where(col(BillingRunItem.run_id) == run_id)
            .where(col(BillingRunItem.position) == position)
            .values(
                outcome=outcome.value, reason=reason[:2000] if reason else None, updated_at=utcnow()
            )
        )


def finish(engine: Engine, run_id: str) -> None:
    with transaction(engine) as session:
        session.execute(
            update(BillingRun).where(col(BillingRun.run_id) == run_id).values(finished_at=utcnow())
        )


def load(engine: Engine, run_id: str) -> tuple[BillingRun, Sequence[BillingRunItem]] | None:
    with reading(engine) as session:
        run = session.get(BillingRun, run_id)
        if run is None:
            return None
        items = session.exec(
            select(BillingRunItem)
            .where(BillingRunItem.run_id == run_id)
            .order_by(col(BillingRunItem.position))
        ).all()
        return run, items


def finished_count(engine: Engine, run_id: str) -> tuple[int, int]:
    """(entries with an outcome, entries whose outcome is a failure): for progress bars.

    Counted by the database, outcome by outcome: progress polls this every few
    seconds, and loading 10,000 manifest rows each time is work for nothing.
    """
    query = (
        select(BillingRunItem.outcome, func.count())
        .where(BillingRunItem.run_id == run_id, col(BillingRunItem.outcome).is_not(None))
        .group_by(col(BillingRunItem.outcome))
    )
    with reading(engine) as session:
        counts: dict[str, int] = {str(outcome): int(n) for outcome, n in session.exec(query).all()}
    failed = sum(n for outcome, n in counts.items() if not Outcome(outcome).done)
    return sum(counts.values()), failed


def artifact_key(run_id: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) distinct per run id."""
    readable = _UNSAFE.sub("-", run_id.lower()).strip("-")[:40]
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"billing-run-{readable}-{digest}"
