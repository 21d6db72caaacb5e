"""A billing run's manifest: which source it bills, and what each entry came to.

Created on a run's first attempt with one row per entry; every later attempt
under the same run id resumes it and processes only the entries that have not
finished (outcome NULL: never ran, or the process died mid-way) or may still
succeed (`outcome.RETRYABLE`). The request's own progress stays in the
ledger, the single truth: a resumed entry picks up where its request stands,
so nothing is billed twice whatever the manifest says.

A run id pins its source's content, with one exception: the same source
(the same file, or "pending") with other content resumes the run with that
content. That is the loop a run with bad rows prescribes — fix them, rerun
the run — so the manifest is rebuilt from the corrected source: every entry
is checked and billed again, except the ones the run already billed, which
stay done (and must still say what they were billed from).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from invoiceflow.batch.outcome import RETRYABLE, Outcome
from invoiceflow.batch.source import Source
from invoiceflow.db.engine import insert_if_absent, reading, transaction
from invoiceflow.db.models import BillingRequestRow, BillingRun, BillingRunItem, utcnow

RUN_ID_MAX_LENGTH = 128
_RUN_ID = re.compile(r"[a-z0-9][a-z0-9._:-]*", re.IGNORECASE)
_UNSAFE = re.compile(r"[^a-z0-9]+")
# Request ids per IN (…) when looking up what a run billed: far below SQLite's variable limit.
_LOOKUP_CHUNK = 500


class ManifestError(Exception):
    """The run id cannot stand for this source; one line naming the fix."""


class ManifestConflict(ManifestError):
    """A request the run already billed has other content in the source now."""


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


def check_resumable(engine: Engine, run_id: str, source: Source) -> int:
    """How many entries `run_id`'s manifest holds once it bills `source`.

    Raises ManifestError if the run bills another source, ManifestConflict if
    a request it billed has other content in `source` now.
    """
    with reading(engine) as session:
        run = session.get(BillingRun, run_id)
        if run is None:
            return len(source.entries)
        if run.source_digest == source.digest:
            return run.total
        return len(_rebuilt(session, run, source))


def _rebuilt(session: Session, run: BillingRun, source: Source) -> list[BillingRunItem]:
    """The manifest of `run` for the corrected content of its own source.

    Each entry starts over (a fixed row is validated and billed like a new
    one; the ledger resumes a request that got part of the way), except a
    request the run already billed: it stays done, with its outcome, as long
    as the source still says what it was billed from. A done request the
    source no longer lists (`pending` drops what is sent) stays in the
    manifest too, at the end: it is part of what the run billed.
    """
    if run.source != source.name[:1000]:
        raise ManifestError(
            f"run id {run.run_id!r} already bills other content ({run.source}, digest "
            f"{run.source_digest[:12]}); use a new --run-id for this source, or omit "
            "--run-id to derive one from its content"
        )
    old = session.exec(
        select(BillingRunItem)
        .where(BillingRunItem.run_id == run.run_id)
        .order_by(col(BillingRunItem.position))
    ).all()
    for item in old:  # the rebuilt items take their places (and primary keys)
        session.expunge(item)
    done = {i.request_id: i for i in old if i.request_id and i.outcome and Outcome(i.outcome).done}
    # What each done request was billed from: the ledger's fingerprint of its content.
    billed: dict[str, str] = {}
    ids = list(done)
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        billed.update(
            session.exec(
                select(BillingRequestRow.request_id, BillingRequestRow.fingerprint).where(
                    col(BillingRequestRow.request_id).in_(chunk)
                )
            ).all()
        )
    items = _items(run.run_id, source)
    for item, entry in zip(items, source.entries, strict=True):
        kept = done.pop(entry.request_id, None) if entry.request_id else None
        if kept is None or kept.request_id not in billed:
            continue
        if entry.request is None or entry.request.fingerprint() != billed[kept.request_id]:
            raise ManifestConflict(
                f"{entry.where}: request {kept.request_id!r} is already {kept.outcome} by "
                f"billing run {run.run_id!r} and its content has changed since; put back what "
                "it was billed from (new lines need a new request_id)"
            )
        item.outcome, item.reason = kept.outcome, kept.reason
    for position, kept in enumerate(done.values(), start=len(items)):
        items.append(
            BillingRunItem(
                run_id=run.run_id,
                position=position,
                request_id=kept.request_id,
                currency=kept.currency,
                total_amount=kept.total_amount,
                outcome=kept.outcome,
                reason=kept.reason,
            )
        )
    return items


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
        repinned = run.source_digest != source.digest
        if repinned:  # corrected content of the run's source (checked again under the lock)
            items = _rebuilt(session, run, source)
            session.execute(delete(BillingRunItem).where(col(BillingRunItem.run_id) == run_id))
            session.add_all(items)
            run.source_digest, run.total = source.digest, len(items)
        run.attempts += 1
        run.finished_at = None
        session.add(run)
        if created:
            session.add_all(_items(run_id, source))
        elif not repinned:
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
