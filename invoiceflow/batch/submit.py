"""Record requests for the next billing run, without invoicing them yet.

Teams collect a month's billable work as it happens; the scheduled billing run
on the 1st invoices everything recorded and not sent yet (its `pending`
source). Recording is all or nothing, in one transaction: an invalid entry, a
request id used twice in the source, or one already recorded with other
content refuses the whole source, and a conflict or a crash midway rolls back
what was written before it, so a corrected file can simply be submitted again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from invoiceflow import ledger
from invoiceflow.batch.source import Source
from invoiceflow.db.engine import transaction
from invoiceflow.db.models import BillingRequestRow
from invoiceflow.request import BillingRequest

# Request ids looked up per query: far below any backend's limit on parameters.
_LOOKUP_CHUNK = 500


class SubmitRefused(ValueError):
    """The source cannot be recorded as a whole; `problems` says why, one line each."""

    def __init__(self, problems: list[str], conflict: bool = False) -> None:
        self.problems = problems
        self.conflict = conflict
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Submitted:
    recorded: int  # new in the ledger
    already: int  # recorded before with the same content


def submit_source(engine: Engine, source: Source) -> Submitted:
    """Record every request of `source` as pending, or none of them."""
    requests = _requests(source)
    try:
        return _record_all(engine, requests)
    except IntegrityError:
        # Another submit recorded one of these ids between our look and our
        # write; all of ours rolled back. Once more: now we see what it stored.
        return _record_all(engine, requests)


def _record_all(engine: Engine, requests: Sequence[BillingRequest]) -> Submitted:
    with transaction(engine) as session:
        stored = _fingerprints(session, [request.request_id for request in requests])
        conflicts = [
            f"{request.request_id}: already recorded with different content; use a new request_id"
            for request in requests
            if (fingerprint := stored.get(request.request_id)) is not None
            and fingerprint != request.fingerprint()
        ]
        if conflicts:
            raise SubmitRefused(conflicts, conflict=True)
        for request in requests:
            # Idempotent: the same request submitted again is the stored one.
            if request.request_id not in stored:
                ledger.record_in(session, request)
    return Submitted(recorded=len(requests) - len(stored), already=len(stored))


def _fingerprints(session: Session, request_ids: list[str]) -> dict[str, str]:
    """The stored fingerprint of each of `request_ids` that is recorded already."""
    found: dict[str, str] = {}
    for start in range(0, len(request_ids), _LOOKUP_CHUNK):
        chunk = request_ids[start : start + _LOOKUP_CHUNK]
        statement = select(BillingRequestRow.request_id, BillingRequestRow.fingerprint).where(
            col(BillingRequestRow.request_id).in_(chunk)
        )
        found.update(dict(session.exec(statement).all()))
    return found


def _requests(source: Source) -> list[BillingRequest]:
    # The reader already made a request id repeated in the source a problem.
    problems = [entry.problem for entry in source.entries if entry.problem]
    if problems:
        raise SubmitRefused(problems)
    return [entry.request for entry in source.entries if entry.request is not None]
