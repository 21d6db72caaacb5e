"""A billing run spread over two Prefect workers: every request invoiced once, Stripe's
rate respected, and a worker killed mid-run costs nothing but a rerun.

The topology is the README's multi-host path on one machine
(`invoiceflow_testing.local_workers`): a Prefect server on PostgreSQL, the `invoiceflow`
process work pool, `billing-shard` registered by `prefect deploy`, two
`prefect worker start` processes, the ledger on PostgreSQL. The parent is the
real CLI (`invoiceflow batch SOURCE --shards 2`); the sandbox answers over HTTP
at Stripe's test-mode rate limit (25 requests/s). Those are the heavy tier; the
shards' split, the deployments' list and the shard-count refusals run in process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from sqlmodel import Session, col, select

from invoiceflow.db.models import BillingRequestRow, RecoveryPoint
from invoiceflow.request import BillingRequest
from tests.conftest import REPO, TEST_KEY, _postgres_database, app_env, run_cli
from tests.helpers import make_request, wait_for
from tests.test_billing_run import _as_json, _invoices_by_request, _items, _jsonl, _run_id_of

RATE = 25  # Stripe's test-mode limit, requests per second
WORKERS = 2
REQUESTS = 210
# Every worker shares one limit through the ledger's PostgreSQL.
LIMITER_ENV = {"INVOICEFLOW_RATE_LIMIT_BACKEND": "postgres", "INVOICEFLOW_STRIPE_RATE": str(RATE)}
# Production's backoff, not the suite's millisecond one: a 429 is waited out.
PRODUCTION_RETRIES = {
    "INVOICEFLOW_RETRY_BASE_DELAY_SECONDS": "0.25",
    "INVOICEFLOW_RETRY_MAX_DELAY_SECONDS": "8",
}


@pytest.fixture(scope="module")
def ledger_url(postgres_unavailable: str | None) -> Iterator[str]:
    yield from _postgres_database(postgres_unavailable)


@pytest.fixture(scope="module")
def topology(sandbox_server: Any, ledger_url: str) -> Iterator[Any]:
    from invoiceflow_testing.local_workers import local_workers

    sandbox_server.reset(config=True)
    env = app_env(sandbox_server.url, ledger_url, **LIMITER_ENV, **PRODUCTION_RETRIES)
    with local_workers(WORKERS, env) as running:
        yield running
    sandbox_server.reset(config=True)


def _requests(prefix: str, count: int) -> list[BillingRequest]:
    """Three lines each, on SKUs of this test's own, for a handful of customers."""
    items = [
        {"sku": f"{prefix}-hour", "name": "Consulting hour", "unit_price": "150.00", "quantity": 3},
        {"sku": f"{prefix}-travel", "name": "Travel", "unit_amount": 4825},
        {"sku": f"{prefix}-seat", "name": "Seat", "unit_amount": 999, "quantity": 7},
    ]
    return [
        make_request(f"{prefix}-{n:04d}", customer=f"{prefix}-c{n % 7}", items=items)
        for n in range(count)
    ]


def _env(topology: Any, ledger_url: str, sandbox_url: str) -> dict[str, str]:
    env = app_env(sandbox_url, ledger_url, **LIMITER_ENV, **PRODUCTION_RETRIES)
    return {**env, "PREFECT_API_URL": topology.api_url}


def _assert_each_invoiced_once_with_its_lines(
    client: stripe.StripeClient, requests: list[BillingRequest]
) -> None:
    invoices = _invoices_by_request(client)
    sent = Counter(
        event.data.object["id"]
        for event in client.v1.events.list(
            {"type": "invoice.sent", "limit": 100}
        ).auto_paging_iter()
    )
    duplicates = {r.request_id: len(invoices[r.request_id]) for r in requests}
    assert set(duplicates.values()) == {1}, {k: n for k, n in duplicates.items() if n != 1}
    for request in requests:
        [invoice] = invoices[request.request_id]
        assert invoice.total == request.total_amount(), request.request_id
        assert not invoice.lines.has_more, request.request_id
        lines = sorted(int(line.metadata["invoiceflow_line"]) for line in invoice.lines.data)
        assert lines == [0, 1, 2], request.request_id
        assert sent[invoice.id] == 1, request.request_id


def _shard_runs(run_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"billing-run:{run_id}"]))
        )


def _workers_of(flow_run_ids: set[str]) -> dict[str, str]:
    """flow run id -> the worker that picked it up, from the workers' own events."""
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventRelatedFilter,
    )

    found: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=["prefect.worker.submitted-flow-run"]),
                related=EventRelatedFilter(id=[f"prefect.flow-run.{i}" for i in flow_run_ids]),
                occurred=EventOccurredFilter(since=datetime.now(UTC) - timedelta(hours=1)),
            ),
            limit=50,
        )
        for event in page.events:
            for related in event.related:
                run = related.id.removeprefix("prefect.flow-run.")
                if run in flow_run_ids:
                    found[run] = event.resource.name or event.resource.id
    return found


def _per_second(entries: list[dict[str, Any]]) -> Counter[int]:
    return Counter(int(entry["time"]) for entry in entries)


def _steady_rate(entries: list[dict[str, Any]]) -> float:
    """Calls per second over the middle 80 % of the calls: no start-up, no stragglers."""
    times = sorted(entry["time"] for entry in entries)
    first, last = times[len(times) // 10], times[len(times) * 9 // 10]
    return (len(times) * 8 // 10) / (last - first)


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.postgres
def test_two_workers_bill_one_run_once_each_within_stripes_rate(
    topology: Any, sandbox_server: Any, ledger_url: str, tmp_path: Path
) -> None:
    sandbox = sandbox_server
    client = stripe.StripeClient(
        TEST_KEY, base_addresses={"api": sandbox.url}, max_network_retries=0
    )
    requests = _requests(f"so{uuid.uuid4().hex[:6]}", REQUESTS)
    source = _jsonl(tmp_path / "scale-out.jsonl", [_as_json(r) for r in requests])
    run_id = _run_id_of(source)
    already = len(sandbox.requests())
    sandbox.configure(rate_limit=RATE)

    command = ("batch", str(source), "--shards", str(WORKERS))
    env = _env(topology, ledger_url, sandbox.url)
    result = run_cli(*command, env=env, timeout=900)

    calls = sandbox.requests()[already:]
    print(f"\n{result.stdout}{result.stderr[-2000:]}")
    assert "Traceback" not in result.stderr
    items = _items(ledger_url, run_id)
    failed = [item for item in items if item.outcome != "invoiced"]
    by_429 = [item for item in failed if "429" in (item.reason or "")]
    assert failed == by_429, [(item.request_id, item.outcome, item.reason) for item in failed]
    # The shared limiter keeps every worker under Stripe's rate: no request
    # ever fails on a 429.
    assert result.returncode == 0, (result.stdout, result.stderr[-3000:])
    assert f"{REQUESTS} requests: {REQUESTS} invoiced" in result.stdout
    assert not by_429

    # Both workers ran a shard, and each shard's flow run completed.
    shard_runs = _shard_runs(run_id)
    assert len(shard_runs) == WORKERS
    assert {run.state.name for run in shard_runs} == {"Completed"}
    assert all(run.parent_task_run_id for run in shard_runs)  # children of the run in the UI
    ids = {str(run.id) for run in shard_runs}
    # The server stores the workers' events a moment after they are sent.
    workers = wait_for(lambda: (w := _workers_of(ids)) and len(w) == len(ids) and w, "events")
    assert sorted(workers.values()) == [w.name for w in topology.workers], workers

    # Stripe's view: requests per one-second window, and the mean rate achieved.
    accepted = [c for c in calls if c["status"] != 429]
    limited = len(calls) - len(accepted)
    span = max(c["time"] for c in calls) - min(c["time"] for c in calls)
    mean_rate = len(accepted) / span
    windows = _per_second(calls)
    print(
        f"scale-out: {len(calls)} Stripe calls ({limited} answered 429) in {span:.1f} s; "
        f"mean {mean_rate:.1f} accepted/s (limit {RATE}); busiest second {max(windows.values())}"
        f"; {len(accepted) / REQUESTS:.1f} calls per invoice"
    )
    # The limiter's rate, where both shards were billing (the ends are start-up
    # and the last stragglers): within 10 % of Stripe's limit, and Stripe's 429s
    # (its own judge of the rate) under 1 % of the calls.
    steady = _steady_rate(accepted)
    print(f"steady {steady:.1f} accepted/s")
    assert RATE * 0.9 <= steady <= RATE * 1.1, (steady, sorted(windows.items()))
    assert limited <= len(calls) / 100, limited

    sandbox.configure(rate_limit=None)
    assert Counter(item.outcome for item in _items(ledger_url, run_id)) == {"invoiced": REQUESTS}
    _assert_each_invoiced_once_with_its_lines(client, requests)


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.postgres
def test_a_worker_killed_mid_run_leaves_its_shard_unfinished_and_a_rerun_bills_it_once(
    topology: Any, sandbox_server: Any, ledger_url: str, tmp_path: Path
) -> None:
    from invoiceflow.db.engine import get_engine

    sandbox = sandbox_server
    client = stripe.StripeClient(
        TEST_KEY, base_addresses={"api": sandbox.url}, max_network_retries=0
    )
    requests = _requests(f"sk{uuid.uuid4().hex[:6]}", 64)
    source = _jsonl(tmp_path / "killed.jsonl", [_as_json(r) for r in requests])
    run_id = _run_id_of(source)
    env = _env(topology, ledger_url, sandbox.url)
    # Slow enough that both shards are still busy when a worker is killed.
    sandbox.configure(latency_ms=150)
    engine = get_engine(ledger_url)
    ids = {r.request_id for r in requests}

    def sent() -> int:
        with Session(engine) as session:
            rows = session.exec(
                select(BillingRequestRow).where(col(BillingRequestRow.request_id).in_(ids))
            ).all()
        return sum(1 for row in rows if row.point is RecoveryPoint.SENT)

    parent = subprocess.Popen(
        [sys.executable, "-m", "invoiceflow", "batch", str(source), "--shards", str(WORKERS)],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: sent() >= 8, "eight requests sent", timeout=600)
        shard_runs = _shard_runs(run_id)
        victim = topology.workers[0]
        ids = {str(run.id) for run in shard_runs}
        running = wait_for(lambda: (w := _workers_of(ids)) and len(w) == len(ids) and w, "events")
        assert victim.name in running.values(), running
        killed = victim.kill()
        assert len(killed) > 1  # the worker and the shard's process under it
        # The crashed-runs automation marks the dead shard Crashed (3 missed 30 s
        # heartbeats); only then does the parent report and exit.
        stdout, stderr = (out.decode(errors="replace") for out in parent.communicate(timeout=600))
    finally:
        if parent.poll() is None:
            parent.kill()
    sandbox.configure(latency_ms=0)

    assert parent.returncode == 7, (stdout, stderr[-3000:])
    assert "did not finish" in stderr
    rerun_command = f"invoiceflow batch {source} --run-id {run_id} --shards {WORKERS}"
    assert f"rerun `{rerun_command}`" in stderr
    assert "ended Crashed" in stderr
    assert "Traceback" not in stderr
    before = {item.position: item for item in _items(ledger_url, run_id)}
    unfinished = [p for p, item in before.items() if item.outcome is None]
    assert unfinished, "the killed shard had finished everything"
    assert f"{len(unfinished)} unfinished" in stdout

    topology.start_worker("worker-3")  # the machine is back
    topology.wait_online(["worker-3"])
    rerun = run_cli(*rerun_command.split()[1:], env=env, timeout=900)

    assert rerun.returncode == 0, (rerun.stdout, rerun.stderr[-3000:])
    assert f"billing run {run_id} (attempt 2): 64 requests: 64 invoiced" in rerun.stdout
    _assert_each_invoiced_once_with_its_lines(client, requests)
    after = {item.position: item for item in _items(ledger_url, run_id)}
    for position, item in before.items():  # the rerun left what had finished alone
        if item.outcome is not None:
            assert after[position].updated_at == item.updated_at


# --- without workers ------------------------------------------------------------------


def test_shards_split_the_manifest_round_robin_and_read_their_requests_from_the_ledger(
    database_url: str, tmp_path: Path
) -> None:
    from invoiceflow import ledger
    from invoiceflow.batch import manifest, shards
    from invoiceflow.batch.source import read_source
    from invoiceflow.db.engine import get_engine

    engine = get_engine(database_url)
    good = _requests(f"sh{uuid.uuid4().hex[:6]}", 7)
    # Its request id was recorded before with other content: no shard may bill it.
    conflicting = make_request(f"{good[0].request_id}-conflict")
    ledger.submit(engine, make_request(conflicting.request_id, description="Other"))
    lines = [_as_json(r) for r in good[:3]] + ['{"request_id": "broken", ']
    lines += [_as_json(conflicting)] + [_as_json(r) for r in good[3:]]
    read = read_source(str(_jsonl(tmp_path / "sharded.jsonl", lines)))
    started = manifest.start(engine, "sharded", read)

    assert shards.record_intents(engine, "sharded", read, started.todo) == 7

    split = [shards.entries(engine, "sharded", shard, 3) for shard in range(3)]
    for shard, entries in enumerate(split):
        assert all(position % 3 == shard for position, _ in entries)
    billed = {request.request_id: request for entries in split for _, request in entries}
    assert billed == {request.request_id: request for request in good}  # as the source says
    outcomes = {item.request_id: item.outcome for item in _items(database_url, "sharded")}
    assert outcomes[conflicting.request_id] == "conflict"
    assert outcomes[None] == "invalid"  # the line that is not JSON
    assert [outcomes[r.request_id] for r in good] == [None] * 7  # the shards' to do


def test_prefect_yaml_registers_what_serve_registers() -> None:
    import asyncio

    import yaml

    from invoiceflow.service.deployments import build_deployments

    served = [(d.name, d.entrypoint) for d in asyncio.run(build_deployments())]
    listed = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())["deployments"]
    assert [(d["name"], d["entrypoint"]) for d in listed] == served
    assert ("billing-shard", "flows.billing_shard.billing_shard_flow") in served


def test_bad_shard_counts_exit_2_in_one_line(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from invoiceflow.cli import app
    from invoiceflow.runtime import reset_runtime

    source = _jsonl(tmp_path / "one.jsonl", [_as_json(make_request("one"))])
    env = app_env("http://127.0.0.1:9", sqlite_url)

    for given, extra in (("0", {}), (None, {"INVOICEFLOW_BATCH_SHARDS": "65"})):
        args = ("batch", str(source), *(("--shards", given) if given else ()))
        with monkeypatch.context() as configured:
            for name, value in {**env, **extra}.items():
                configured.setenv(name, value)
            reset_runtime()
            result = CliRunner().invoke(app, list(args), catch_exceptions=False)
        reset_runtime()
        assert result.exit_code == 2, (result.stdout, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert "INVOICEFLOW_BATCH_SHARDS" in line, line


@pytest.mark.slow
@pytest.mark.heavy  # a Prefect server of its own
def test_shards_without_a_registered_deployment_exit_2_naming_prefect_deploy(
    sqlite_url: str, tmp_path: Path
) -> None:
    from invoiceflow.batch import manifest
    from invoiceflow.db.engine import get_engine
    from invoiceflow_testing.local_prefect import local_prefect_server

    source = _jsonl(tmp_path / "nowhere.jsonl", [_as_json(make_request("nowhere"))])
    env = app_env("http://127.0.0.1:9", sqlite_url)
    with local_prefect_server() as prefect:  # a server with no deployment at all
        result = run_cli(
            "batch", str(source), "--shards", "2", env={**env, "PREFECT_API_URL": prefect.api_url}
        )

    assert result.returncode == 2, (result.stdout, result.stderr)
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: deployment 'billing-shard/billing-shard' is not registered")
    assert "prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml" in line
    assert "Traceback" not in result.stderr
    assert manifest.load(get_engine(sqlite_url), _run_id_of(source)) is None  # nothing recorded
