"""A dunning run: which requests it takes, as of when, and its units' lines in one report.

The dunning flow runs each unit (`act.dun`) as a Prefect task on a thread pool;
`in_sequence` runs the same units one after another without Prefect (the rules'
tests, and anything that wants a run with no orchestration). Both plan the run
and turn a unit's failure into its line here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from invoiceflow.dunning import act
from invoiceflow.dunning.report import DunningReport, Outcome, StepLine
from invoiceflow.outcomes import classify
from invoiceflow.retry import describe
from invoiceflow.runtime import Runtime
from invoiceflow.stripe_clock import stripe_now


@dataclass(frozen=True)
class Plan:
    """`now`: the run's time (the report's "as of"). `judged_at`: the time each unit
    judges its invoice by — `as_of`, or None: each invoice by its own customer's clock."""

    now: datetime
    judged_at: datetime | None
    request_ids: list[str]


def plan(rt: Runtime, as_of: datetime | None) -> Plan:
    """The requests a run as of `as_of` (None: now) takes, and the time each is judged by."""
    now = as_of or stripe_now(rt)
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    if as_of is not None:
        return Plan(now, now, act.candidates(rt.engine, now))
    # Without `as_of`, each invoice is judged by its own customer's clock (a test
    # clock's, else the real time), never all by the configured clock's: the
    # candidates are those due by the later of the two. (A customer left on an
    # older clock that is further ahead waits for them; it is never judged early.)
    return Plan(now, None, act.candidates(rt.engine, max(now, datetime.now(UTC))))


def failed_line(request_id: str, exc: BaseException) -> StepLine:
    """A unit that failed is one line saying why; the run's other units go on."""
    return StepLine(
        request_id=request_id,
        outcome=Outcome.FAILED,
        reason=describe(exc),
        exit_code=int(classify(exc)),
    )


def in_sequence(rt: Runtime, as_of: datetime | None, owner: str) -> DunningReport:
    """A whole dunning run, its units one after another in this thread, without Prefect."""
    planned = plan(rt, as_of)
    lines: list[StepLine] = []
    for request_id in planned.request_ids:
        try:
            lines += act.dun(rt, request_id, planned.judged_at, owner)
        except Exception as exc:
            lines.append(failed_line(request_id, exc))
    return DunningReport(as_of=planned.now, candidates=len(planned.request_ids), lines=lines)
