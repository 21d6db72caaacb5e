"""Leases and locks: a living run keeps its request, a stalled one never blocks
others, and nothing depends on Prefect not running a step twice.

Real SQLite files and real PostgreSQL (both in the default tier: locks, races
and session timeouts are the backend's). Real processes where a run must be
paused or outlive its lease are in the heavy tier; the default tier proves the
same rules in process (a lease renewed for a slow run, here; a lapsed and a lost
lease, in tests/test_pipeline.py; a failing step's real cause, on the flow).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe
from sqlalchemy import create_engine, text

from invoiceflow import ledger
from invoiceflow.db.engine import reading
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.runtime import get_runtime
from tests.conftest import REPO, app_env, run_cli
from tests.helpers import (
    assert_exactly_one_invoice,
    bill_plain,
    make_request,
    stalled,
    wait_for,
    writes,
)

pytestmark = pytest.mark.usefixtures("configured")


@pytest.mark.backend
def test_concurrent_first_intents_for_one_key_never_crash(configured: dict[str, str]) -> None:
    """Eight threads record the same new intent at once: all succeed, one is first."""
    engine = get_runtime().engine
    barrier = threading.Barrier(8)
    results: list[ledger.Intent] = []
    errors: list[BaseException] = []

    def record() -> None:
        try:
            barrier.wait()
            results.append(ledger.intend(engine, "invoiceflow:test:race", "test", None))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=record) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(intent.seen_before for intent in results) == [False] + [True] * 7


def _hold_row_lock(url: str, request_id: str, seconds: float, held: threading.Event) -> None:
    """Another process's transaction sitting on the request's row (a paused run)."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        connection.execute("COMMIT")
        connection.close()
        return
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("SELECT 1 FROM billing_request WHERE request_id = :id FOR UPDATE"),
            {"id": request_id},
        )
        held.set()
        time.sleep(seconds)
    engine.dispose()


@pytest.mark.backend
def test_a_lease_taken_after_waiting_for_the_row_runs_from_then(
    configured: dict[str, str],
) -> None:
    engine = get_runtime().engine
    request = make_request(f"wait-{uuid.uuid4().hex[:8]}")
    ledger.submit(engine, request)
    held = threading.Event()
    blocker = threading.Thread(
        target=_hold_row_lock,
        args=(configured["INVOICEFLOW_DATABASE_URL"], request.request_id, 2.0, held),
    )
    blocker.start()
    held.wait(timeout=30)

    assert ledger.acquire_lease(engine, request.request_id, "late-run", ttl_seconds=1.0)
    got_it_at = time.time()
    blocker.join()

    row = ledger.require(engine, request.request_id)
    assert row.lease_owner == "late-run"
    # Counted from when the row was really ours, not from before the wait.
    assert (row.lease_expires_at or 0) > got_it_at + 0.5


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # SQLite's WAL is the point
def test_a_sqlite_reader_never_blocks_a_writer(sqlite_url: str, monkeypatch: Any) -> None:
    from invoiceflow.runtime import reset_runtime

    monkeypatch.setenv("INVOICEFLOW_DATABASE_URL", sqlite_url)
    reset_runtime()
    engine = get_runtime().engine
    ledger.submit(engine, make_request("already-there"))
    written = threading.Event()

    with reading(engine) as session:  # a read transaction left open, as by a paused process
        session.execute(text("SELECT count(*) FROM billing_request")).one()
        writer = threading.Thread(
            target=lambda: (ledger.submit(engine, make_request("new-one")), written.set())
        )
        writer.start()
        writer.join(timeout=20)
        assert written.is_set(), "a write waited for an open read transaction"
    assert ledger.load(engine, "new-one") is not None


def test_a_run_slower_than_its_lease_keeps_it_in_process(
    sandbox: Any, stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lease 1 s, every Stripe call 150 ms: the attempt takes many leases' worth of
    time, renews its lease as it goes, and finishes (not LeaseLost, not RequestBusy)."""
    from invoiceflow.runtime import reset_runtime

    monkeypatch.setenv("INVOICEFLOW_LEASE_SECONDS", "1")
    reset_runtime()
    sandbox.configure(latency_ms=150)
    request = make_request(f"slow-{uuid.uuid4().hex[:8]}")
    started = time.monotonic()

    status = bill_plain(request)

    assert status.state is RecoveryPoint.SENT, status.last_error
    # Over a dozen calls at 150 ms each: two leases' worth at least.
    assert time.monotonic() - started > 2, "the run was not slower than its lease"
    assert_exactly_one_invoice(stripe_client, request)
    assert ledger.require(get_runtime().engine, request.request_id).lease_owner is None


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.usefixtures("prefect_api")
def test_a_run_slower_than_its_lease_keeps_it_and_finishes(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    configured: dict[str, str],
    tmp_path: Path,
) -> None:
    """Lease 1 s, every Stripe call 150 ms: the run takes many leases' worth of
    time and still finishes (no exit 6 with nobody else around)."""
    sandbox.configure(latency_ms=150)
    request = make_request(f"slow-{uuid.uuid4().hex[:8]}")
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request.model_dump(mode="json")))
    env = app_env(
        sandbox.url, configured["INVOICEFLOW_DATABASE_URL"], INVOICEFLOW_LEASE_SECONDS="1"
    )

    result = run_cli("invoice", str(request_file), "--no-wait", env=env, timeout=300)

    assert result.returncode == 0, result.stderr
    assert_exactly_one_invoice(stripe_client, request)


@pytest.mark.slow
@pytest.mark.heavy  # SIGSTOP; in process: tests/test_pipeline.py's lease taken away
@pytest.mark.usefixtures("prefect_api")
def test_a_paused_run_that_lost_its_lease_makes_no_further_write(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    configured: dict[str, str],
    tmp_path: Path,
) -> None:
    """Run A is paused (SIGSTOP) mid-send past its lease; run B takes over and
    finishes. Resumed, A makes no Stripe write and exits 6."""
    from flows.invoice import invoice_flow

    request = make_request(f"paused-{uuid.uuid4().hex[:8]}")
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request.model_dump(mode="json")))
    env = app_env(
        sandbox.url, configured["INVOICEFLOW_DATABASE_URL"], INVOICEFLOW_LEASE_SECONDS="2"
    )
    sandbox.configure(
        stall_ms=2000, faults=[{"method": "POST", "path": "/send$", "when": "stall_before_write"}]
    )
    run_a = subprocess.Popen(
        [sys.executable, "-m", "invoiceflow", "invoice", str(request_file), "--no-wait"],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: stalled(sandbox, "stall_before_write"), "run A to reach send")
        run_a.send_signal(signal.SIGSTOP)
        wait_for(
            lambda: stalled(sandbox, "stall_before_write")["status"] is not None,
            "A's stalled send to end",
        )
        time.sleep(2.5)  # A's lease lapses while it is paused

        status = invoice_flow(request)  # run B
        assert status.state is RecoveryPoint.SENT, status.last_error
        writes_after_b = len(writes(sandbox))
    finally:
        run_a.send_signal(signal.SIGCONT)
    _out, err = run_a.communicate(timeout=120)

    assert run_a.returncode == 6, err
    assert "taken over by another run" in err
    assert len(writes(sandbox)) == writes_after_b, "the paused run wrote after losing its lease"
    assert_exactly_one_invoice(stripe_client, request)


@pytest.mark.usefixtures("prefect_api")
def test_a_failing_product_step_reports_its_real_cause_through_the_flow(sandbox: Any) -> None:
    """Stripe keeps failing the product create: the flow (whose product tasks run in
    parallel) fails with the product's error, temporary (exit 5, rerun later) and
    naming the product, not Prefect's "UnfinishedRun" (exit 1)."""
    from flows.invoice import invoice_flow
    from invoiceflow.outcomes import Exit, classify
    from invoiceflow.retry import describe

    sandbox.configure(
        faults=[{"method": "POST", "path": "^/v1/products$", "when": "before_write", "times": 500}]
    )
    request = make_request(f"product-down-{uuid.uuid4().hex[:8]}")

    with pytest.raises(Exception) as failed:  # which exception is what this test checks
        invoice_flow(request)

    assert classify(failed.value) is Exit.TEMPORARY
    line = f"error: {request.request_id}: {describe(failed.value)}"  # what the CLI prints
    assert "create product" in line, line
    assert "UnfinishedRun" not in line


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.usefixtures("prefect_api")
def test_a_failing_product_step_reports_its_real_cause(
    sandbox: Any, configured: dict[str, str], tmp_path: Path
) -> None:
    """Stripe keeps failing the product create: exit 5 (temporary, rerun later)
    naming the product — not exit 1 "UnfinishedRun"."""
    sandbox.configure(
        faults=[{"method": "POST", "path": "^/v1/products$", "when": "before_write", "times": 500}]
    )
    request = make_request(f"product-down-{uuid.uuid4().hex[:8]}")
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request.model_dump(mode="json")))
    env = app_env(sandbox.url, configured["INVOICEFLOW_DATABASE_URL"])

    result = run_cli("invoice", str(request_file), "--no-wait", env=env)

    assert result.returncode == 5, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert "create product" in last_line, result.stderr
    assert "UnfinishedRun" not in result.stderr


@pytest.mark.backend
def test_postgres_sessions_cannot_wait_or_idle_forever(database_url: str, monkeypatch: Any) -> None:
    """A stalled transaction (a paused process) is ended by the server, and a
    waiter gives up after a bounded time instead of outliving its lease."""
    if not database_url.startswith("postgresql"):
        pytest.skip("lock and idle timeouts are PostgreSQL session settings; SQLite has none")
    from invoiceflow.db.engine import PG_IDLE_IN_TRANSACTION_TIMEOUT_MS, PG_LOCK_TIMEOUT_MS

    engine = get_runtime().engine
    with reading(engine) as session:
        lock = session.execute(text("SHOW lock_timeout")).scalar_one()
        idle = session.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one()
    assert lock == f"{PG_LOCK_TIMEOUT_MS // 1000}s"
    assert idle == f"{PG_IDLE_IN_TRANSACTION_TIMEOUT_MS // 1000}s"


@pytest.mark.backend
def test_a_postgres_connection_the_server_dropped_is_replaced_before_use(
    database_url: str, monkeypatch: Any
) -> None:
    """A pooled connection that sat idle is pinged first: after the server ended
    its backends (a restart, a failover), the next read and write just work."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to drop a connection")
    from invoiceflow.db import engine as engines

    monkeypatch.setattr(engines, "PG_PING_AFTER_IDLE_SECONDS", 0.0)  # every checkout is "idle"
    engine = get_runtime().engine
    ledger.submit(engine, make_request("req-dropped"))
    with reading(engine) as session:
        before = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
    finally:
        admin.dispose()
    assert ended >= 1
    with reading(engine) as session:
        after = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    assert after != before
    assert ledger.require(engine, "req-dropped").point is RecoveryPoint.PLANNED
    with engines.transaction(engine) as session:
        assert ledger.lock_row(session, "req-dropped") is not None
