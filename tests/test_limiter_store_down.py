"""The shared rate limit's store down (issue 19, hole 9): a temporary failure.

With Redis unreachable the limiter fails closed — no slot, so no Stripe call —
and that is classified as temporary: retried with backoff, then the entry ends
`temporary`, which the rerun the run prescribes picks up and, with the store
back, bills once. (Before, every entry ended `unexpected`, never retried, and
the rerun billed none of them: exit 7 forever.)

In process: a billing run's entries through the same plain functions its tasks
call (`batch.unit.bill_entry`), the Stripe sandbox over HTTP, the real Redis.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow import ledger, retry
from invoiceflow.batch import manifest, report, unit
from invoiceflow.batch.outcome import Outcome
from invoiceflow.batch.source import read_source
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.outcomes import Exit, classify
from invoiceflow.reconcile.stuck import is_temporary
from invoiceflow.runtime import get_runtime, reset_runtime
from tests.helpers import assert_exactly_one_invoice, make_request

pytestmark = pytest.mark.usefixtures("prefect_api", "configured")

REDIS_URL = os.environ.get("INVOICEFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Nothing listens on port 1: every connection is refused at once.
REDIS_DOWN = "redis://127.0.0.1:1/0"
ONE_LINE = [{"sku": "store-down-seat", "name": "Seat", "unit_amount": 1200, "quantity": 2}]


def _use_store(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("INVOICEFLOW_RATE_LIMIT_BACKEND", url)
    reset_runtime()  # new settings: the limiter is rebuilt on its next use


def _redis_up() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}")


def _run_entries(run_id: str, source: Path) -> report.BatchReport:
    """What `billing_run_flow` does with one shard, minus Prefect's tasks."""
    rt = get_runtime()
    read = read_source(str(source), rt.engine)
    started = manifest.start(rt.engine, run_id, read)
    for position in started.todo:
        request = read.entries[position].request
        assert request is not None
        unit.bill_entry(rt, run_id, position, request, _owner(position))
    manifest.finish(rt.engine, run_id)
    loaded = manifest.load(rt.engine, run_id)
    assert loaded is not None
    return report.build(*loaded)


def _owner(position: int) -> str:
    return f"store-down-test:{position}"


def test_redis_down_ends_entries_temporary_with_no_stripe_call_and_the_rerun_bills_them(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _redis_up()
    requests = [
        make_request(f"store-down-{n}", customer=f"store-down-cust{n}", items=ONE_LINE)
        for n in range(3)
    ]
    source = tmp_path / "requests.jsonl"
    source.write_text("".join(json.dumps(r.model_dump(mode="json")) + "\n" for r in requests))

    _use_store(monkeypatch, REDIS_DOWN)
    first = _run_entries("store-down", source)

    # Failed closed: not one call reached Stripe, reads included.
    assert sandbox.requests() == []
    assert first.counts == {Outcome.TEMPORARY.value: 3}
    assert not first.ok
    for failure in first.failures:
        assert "rate limit store unreachable" in failure.reason, failure.reason
        assert "127.0.0.1:1" in failure.reason  # where, so an operator knows what to fix
    engine = get_runtime().engine
    for request in requests:
        row = ledger.require(engine, request.request_id)
        assert row.point is RecoveryPoint.FAILED
        assert is_temporary(row.last_error), row.last_error  # reconcile would resume it too

    _use_store(monkeypatch, REDIS_URL)
    rerun = _run_entries("store-down", source)

    assert rerun.ok, rerun.lines()
    assert rerun.counts == {Outcome.INVOICED.value: 3}
    assert rerun.attempts == 2
    for request in requests:
        assert_exactly_one_invoice(stripe_client, request)
        assert ledger.require(get_runtime().engine, request.request_id).point is RecoveryPoint.SENT


def test_a_call_with_the_store_down_is_retried_with_backoff_then_temporary_never_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from invoiceflow.ratelimit import RateLimitStoreDown

    _use_store(monkeypatch, REDIS_DOWN)
    calls: list[int] = []
    slept: list[float] = []
    policy = retry.RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.04)

    with pytest.raises(RateLimitStoreDown) as down:
        retry.call_with_retries(
            lambda: calls.append(1), "create invoice", read=False, policy=policy, sleep=slept.append
        )

    assert calls == []  # fails closed: the call itself never ran
    assert len(slept) == policy.attempts - 1  # retried, each after a backoff
    assert all(0 < s <= policy.max_delay for s in slept)
    assert classify(down.value) is Exit.TEMPORARY
    assert retry.describe(down.value).startswith("create invoice: RateLimitStoreDown")
