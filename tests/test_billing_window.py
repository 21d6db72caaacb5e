"""The billing run's submission window frees a slot for whichever task finishes first.

It used to wait on its oldest future: one slow request (a busy lease, a long
Stripe retry) stalled every request behind it, however many threads were idle.
Here the first task blocks until the window has handed back every other one —
which only a window that takes futures as they finish can do.
"""

from __future__ import annotations

import threading

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.billing_run import in_window, thread_pool
from invoiceflow.runtime import reset_runtime

pytestmark = pytest.mark.usefixtures("prefect_api")

WORKERS = 2  # a window of 4
COUNT = 12
# Only a bound for the failure case (the old window never releases the slow task).
PATIENCE_SECONDS = 30


def test_one_slow_task_does_not_stall_the_window(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("INVOICEFLOW_BATCH_WORKERS", str(WORKERS))
    reset_runtime()
    others_done = threading.Event()

    @task(name="window-item", cache_policy=NO_CACHE, persist_result=False, retries=0)
    def item(n: int) -> str:
        if n == 0:  # the slow one: done only once every other item came back
            return "slow, released" if others_done.wait(PATIENCE_SECONDS) else "slow, stalled"
        return f"quick {n}"

    @flow(name="window-test", task_runner=thread_pool(), retries=0)
    def windowed() -> list[str]:
        seen: list[str] = []
        for future in in_window(item.submit, range(COUNT)):
            seen.append(future.result())
            if len(seen) == COUNT - 1:
                others_done.set()
        return seen

    seen = windowed()

    assert seen[-1] == "slow, released"
    assert sorted(seen[:-1]) == sorted(f"quick {n}" for n in range(1, COUNT))
    reset_runtime()


def test_the_prefect_floor_benchmark_still_counts_every_task(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """bench/prefect_floor.py submits through the same window."""
    from bench.prefect_floor import prefect_floor_flow

    clean_env.setenv("INVOICEFLOW_BATCH_WORKERS", str(WORKERS))
    reset_runtime()
    assert prefect_floor_flow("window-floor", 9) == 9
    reset_runtime()
