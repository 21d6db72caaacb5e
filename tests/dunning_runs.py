"""A dunning run without Prefect, for tests of dunning's rules.

The dunning flow (flows/dunning.py) picks the candidates, then runs each request's
unit (`act.dun`) as a task; here the same units run in sequence. Its rules are all
in those plain functions; the flow itself is proven on the session's Prefect server
(tests/test_dunning.py's CLI test, tests/test_dunning_clock.py's clock test).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from invoiceflow import lease
from invoiceflow.dunning import act
from invoiceflow.dunning.report import DunningReport, Outcome, StepLine
from invoiceflow.outcomes import classify
from invoiceflow.retry import describe
from invoiceflow.runtime import get_runtime
from invoiceflow.stripe_clock import stripe_now


def dun_in_sequence(as_of: datetime | None = None) -> DunningReport:
    """One dunning run as the flow makes it: as of `as_of`, or (None) each invoice as
    of its own customer's clock; a unit that fails is one failed line, the others go on."""
    rt = get_runtime()
    now = (as_of or stripe_now(rt)).astimezone(UTC)
    # As the flow: without `as_of`, the candidates are those due by the later of the
    # configured clock's time and the real time, and each unit reads its own clock.
    judged_at = now if as_of is not None else None
    latest = now if as_of is not None else max(now, datetime.now(UTC))
    request_ids = act.candidates(rt.engine, latest)
    owner = lease.new_owner(f"dunning-{uuid.uuid4().hex}")
    lines: list[StepLine] = []
    for request_id in request_ids:
        try:
            lines += act.dun(rt, request_id, judged_at, owner)
        except Exception as exc:
            failed = StepLine(
                request_id=request_id,
                outcome=Outcome.FAILED,
                reason=describe(exc),
                exit_code=int(classify(exc)),
            )
            lines.append(failed)
    return DunningReport(as_of=now, candidates=len(request_ids), lines=lines)
