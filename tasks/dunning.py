"""The dunning flow's one task: every step due for one overdue request.

Same retry policy as the invoice steps (`tasks.billing`): transient failures
are retried later, which is safe because the request's `dunning_step` rows
and Stripe's events decide what was already done.
"""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from invoiceflow.dunning import act
from invoiceflow.dunning.report import StepLine
from invoiceflow.runtime import get_runtime
from tasks.billing import TASK_RETRY_DELAYS_SECONDS, TASK_RETRY_JITTER, retry_if_transient


@task(
    name="dun-request",
    task_run_name="dun-{request_id}",
    retries=len(TASK_RETRY_DELAYS_SECONDS),
    retry_delay_seconds=TASK_RETRY_DELAYS_SECONDS,
    retry_jitter_factor=TASK_RETRY_JITTER,
    retry_condition_fn=retry_if_transient,
    # Our dunning_step rows decide what is done; Prefect's result cache must not.
    cache_policy=NO_CACHE,
    persist_result=False,
)
def dun_request(request_id: str, now: datetime, owner: str) -> list[StepLine]:
    return act.dun(get_runtime(), request_id, now, owner)
