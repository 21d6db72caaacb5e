"""The dunning flow's one task: every step due for one overdue request.

Same retry policy as the invoice steps (`tasks.billing`): transient failures
are retried later, which is safe because the request's `dunning_step` rows
and Stripe's events decide what was already done.
"""

from __future__ import annotations

from datetime import datetime

from invoiceflow.dunning import act
from invoiceflow.dunning.report import StepLine
from invoiceflow.runtime import get_runtime
from tasks.billing import stripe_step


# Our dunning_step rows and Stripe's events decide what is done, not Prefect's cache.
@stripe_step("dun-request", "dun-{request_id}")
def dun_request(request_id: str, as_of: datetime | None, owner: str) -> list[StepLine]:
    return act.dun(get_runtime(), request_id, as_of, owner)
