"""How one entry of a billing run ended, in the words the report and the manifest use."""

from __future__ import annotations

from enum import StrEnum

from invoiceflow.db.models import RecoveryPoint
from invoiceflow.outcomes import Exit


class Outcome(StrEnum):
    # Done: the invoice is sent (and may since have been settled in Stripe).
    INVOICED = "invoiced"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"
    # Done for this run, and not invoiced: a filled draft held for approval, or a
    # held draft deleted (`invoiceflow.approval`).
    HELD = "held"
    REJECTED = "rejected"
    # Not done, and a rerun of the same source will not change that by itself.
    INVALID = "invalid"
    CONFLICT = "conflict"
    REFUSED = "refused"
    UNEXPECTED = "unexpected"
    # Not done yet: a rerun of the run picks these up again.
    TEMPORARY = "temporary"
    BUSY = "busy"
    TAKEN_OVER = "taken_over"

    @property
    def done(self) -> bool:
        return self in DONE

    @property
    def retryable(self) -> bool:
        return self in RETRYABLE


DONE = frozenset(
    {
        Outcome.INVOICED,
        Outcome.PAID,
        Outcome.VOID,
        Outcome.UNCOLLECTIBLE,
        Outcome.HELD,
        Outcome.REJECTED,
    }
)
# Done without an invoice: what a run's invoiced totals leave out.
NOT_INVOICED = frozenset({Outcome.HELD, Outcome.REJECTED})
# Another run holding or taking over the request finishes it; the rerun then
# only reads where it stands.
RETRYABLE = frozenset({Outcome.TEMPORARY, Outcome.BUSY, Outcome.TAKEN_OVER})

_BY_EXIT = {
    Exit.BAD_INPUT: Outcome.INVALID,
    Exit.CONFLICT: Outcome.CONFLICT,
    Exit.REFUSED: Outcome.REFUSED,
    Exit.TEMPORARY: Outcome.TEMPORARY,
    Exit.BUSY: Outcome.BUSY,
}

_BY_POINT = {
    RecoveryPoint.SENT: Outcome.INVOICED,
    RecoveryPoint.PAID: Outcome.PAID,
    RecoveryPoint.VOID: Outcome.VOID,
    RecoveryPoint.UNCOLLECTIBLE: Outcome.UNCOLLECTIBLE,
    RecoveryPoint.HELD: Outcome.HELD,
    RecoveryPoint.REJECTED: Outcome.REJECTED,
}


def of_exit(code: Exit) -> Outcome:
    """The outcome for a failure `invoiceflow.outcomes.classify` sorted into `code`."""
    return _BY_EXIT.get(code, Outcome.UNEXPECTED)


def of_point(point: RecoveryPoint) -> Outcome | None:
    """The outcome of a request that ended at `point`; None if it is not sent (or held) yet."""
    return _BY_POINT.get(point)
