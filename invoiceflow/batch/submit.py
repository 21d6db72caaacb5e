"""Record requests for the next billing run, without invoicing them yet.

Teams collect a month's billable work as it happens; the scheduled billing run
on the 1st invoices everything recorded and not sent yet (its `pending`
source). Recording is all or nothing: an invalid entry, a request id used
twice in the source, or one already recorded with other content refuses the
whole source before anything is stored, so a corrected file can simply be
submitted again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from invoiceflow import ledger
from invoiceflow.batch.source import Source
from invoiceflow.request import BillingRequest


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
    stored = {request.request_id: ledger.load(engine, request.request_id) for request in requests}
    conflicts = [
        f"{request.request_id}: already recorded with different content; use a new request_id"
        for request in requests
        if (row := stored[request.request_id]) is not None
        and row.fingerprint != request.fingerprint()
    ]
    if conflicts:
        raise SubmitRefused(conflicts, conflict=True)
    already = sum(1 for row in stored.values() if row is not None)
    for request in requests:
        # Idempotent: the same request submitted again is the stored one.
        ledger.submit(engine, request)
    return Submitted(recorded=len(requests) - already, already=already)


def _requests(source: Source) -> list[BillingRequest]:
    # The reader already made a request id repeated in the source a problem.
    problems = [entry.problem for entry in source.entries if entry.problem]
    if problems:
        raise SubmitRefused(problems)
    return [entry.request for entry in source.entries if entry.request is not None]
