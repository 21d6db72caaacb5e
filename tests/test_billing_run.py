"""Billing runs: many requests, each its own unit of work, resumable after a crash.

Through the real CLI (`invoiceflow batch`), a real Prefect server, the Stripe
sandbox over HTTP and real SQLite/PostgreSQL databases.

Default tier: reading sources (CSV, JSONL, a directory, pending) and refusing bad
ones are plain functions and the CLI in process; one billing run through the CLI in
process on the session's Prefect server is the orchestration contract (the report,
its artifacts, a task run and a story per invoice). Heavy tier: the sixty-request
run, the killed run, Ctrl-C, and every source billed by a `batch` subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import stripe
import yaml
from sqlmodel import Session, select

from invoiceflow.batch import manifest
from invoiceflow.batch.source import read_source
from invoiceflow.db.models import BillingRequestRow, BillingRun, BillingRunItem, RecoveryPoint
from invoiceflow.request import BillingRequest
from tests.conftest import REPO, app_env, run_cli
from tests.helpers import assert_exactly_one_invoice, bill_plain, make_request, wait_for
from tests.inprocess_cli import configured_cli

# One cheap line per request: the batch is about many requests, not many lines.
ONE_LINE = [{"sku": "batch-seat", "name": "Seat", "unit_amount": 1200, "quantity": 2}]


def _requests(prefix: str, count: int) -> list[BillingRequest]:
    return [
        make_request(f"{prefix}-{n:03d}", customer=f"{prefix}-cust{n % 5}", items=ONE_LINE)
        for n in range(count)
    ]


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _as_json(request: BillingRequest) -> str:
    return json.dumps(request.model_dump(mode="json"))


def _invoices_by_request(client: stripe.StripeClient) -> dict[str, list[stripe.Invoice]]:
    found: dict[str, list[stripe.Invoice]] = {}
    for invoice in client.v1.invoices.list({"limit": 100}).auto_paging_iter():
        metadata = invoice.metadata.to_dict() if invoice.metadata else {}
        request_id = metadata.get("invoiceflow_request_id")
        if request_id:
            found.setdefault(request_id, []).append(invoice)
    return found


def _sent_events(client: stripe.StripeClient) -> Counter[str]:
    events = client.v1.events.list({"type": "invoice.sent", "limit": 100}).auto_paging_iter()
    return Counter(event.data.object["id"] for event in events)


def _assert_invoiced_once(client: stripe.StripeClient, requests: list[BillingRequest]) -> None:
    """One Stripe invoice per request, for its total, sent exactly once."""
    invoices = _invoices_by_request(client)
    sent = _sent_events(client)
    for request in requests:
        found = invoices.get(request.request_id, [])
        assert len(found) == 1, f"{len(found)} invoices for {request.request_id}"
        assert found[0].total == request.total_amount()
        assert sent[found[0].id] == 1, request.request_id
    assert_exactly_one_invoice(client, requests[0])  # and, for one, line by line


def _items(database_url: str, run_id: str) -> list[BillingRunItem]:
    from invoiceflow.db.engine import get_engine

    loaded = manifest.load(get_engine(database_url), run_id)
    assert loaded is not None
    return list(loaded[1])


def _run(database_url: str, run_id: str) -> BillingRun:
    from invoiceflow.db.engine import get_engine

    loaded = manifest.load(get_engine(database_url), run_id)
    assert loaded is not None
    return loaded[0]


def _run_id_of(path: Path) -> str:
    return manifest.default_run_id(read_source(str(path)))


# --- sixty requests, five bad ones ------------------------------------------------


@pytest.mark.heavy  # sixty requests, twice, through `invoiceflow batch` subprocesses
@pytest.mark.usefixtures("prefect_api")
def test_sixty_requests_five_bad_each_good_one_invoiced_once_each_bad_one_named(
    sandbox: Any, stripe_client: stripe.StripeClient, database_url: str, tmp_path: Path
) -> None:
    from invoiceflow import ledger
    from invoiceflow.db.engine import get_engine
    from invoiceflow.stripe_keys import product_id

    prefix = f"b{uuid.uuid4().hex[:6]}"
    good = _requests(prefix, 55)
    # Invalid: a quantity of 0, and a line that is not JSON at all.
    invalid = json.loads(_as_json(make_request(f"{prefix}-invalid", items=ONE_LINE)))
    invalid["items"][0]["quantity"] = 0
    # Conflicting: its request_id was submitted earlier with other content.
    conflicting = make_request(f"{prefix}-conflict", items=ONE_LINE)
    ledger.submit(
        get_engine(database_url),
        make_request(f"{prefix}-conflict", items=[{**ONE_LINE[0], "quantity": 9}]),
    )
    # Refused for good by Stripe: the account cannot bill in this currency (the
    # sandbox, like many Stripe accounts, does not take Sierra Leonean leones).
    declined = make_request(
        f"{prefix}-declined",
        customer=f"{prefix}-declined-cust",
        currency="sll",
        items=[{"sku": "batch-seat-sll", "name": "Seat (SLL)", "unit_amount": 1200}],
    )
    # A Stripe 500 storm on one request's product: every retry gets a 500.
    storm = make_request(
        f"{prefix}-storm",
        items=[{"sku": f"{prefix}-storm-sku", "name": "Storm", "unit_amount": 500}],
    )
    storm_path = f"^/v1/products/{product_id(f'{prefix}-storm-sku')}$"
    sandbox.configure(faults=[{"path": storm_path, "when": "before_write", "times": 10_000}])

    lines = [_as_json(r) for r in good[:20]]
    lines += [json.dumps(invalid), '{"request_id": "broken", ', _as_json(conflicting)]
    lines += [_as_json(r) for r in good[20:40]] + [_as_json(declined), _as_json(storm)]
    lines += [_as_json(r) for r in good[40:]]
    source = _jsonl(tmp_path / "november.jsonl", lines)
    assert len(lines) == 60

    env = app_env(sandbox.url, database_url, INVOICEFLOW_BATCH_WORKERS="6")
    result = run_cli("batch", str(source), env=env, timeout=900)

    assert result.returncode == 7, (result.stdout, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    _assert_invoiced_once(stripe_client, good)
    for bad in (conflicting, declined, storm):
        assert not _invoices_by_request(stripe_client).get(bad.request_id)

    run_id = _run_id_of(source)
    report = result.stdout
    assert f"billing run {run_id} (attempt 1): 60 requests: 55 invoiced" in report
    assert "2 invalid, 1 conflict, 1 refused, 1 temporary" in report
    assert "invoiced 1320.00 USD" in report  # 55 requests of 2 x 12.00
    failed_lines = [line for line in report.splitlines() if line.startswith("failed ")]
    assert len(failed_lines) == 5, report
    assert any("quantity: must be at least 1, got 0" in line for line in failed_lines)
    assert any("line 22: invalid JSON" in line for line in failed_lines)
    assert f"failed {prefix}-conflict: conflict: RequestConflict" in report
    assert f"failed {prefix}-declined: refused: create price " in report
    assert "InvalidRequestError HTTP 400 Invalid currency: sll" in report
    assert f"failed {prefix}-storm: temporary: get product " in report
    assert "APIError HTTP 500" in report
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error.startswith("error: 5 of 60 requests failed (")
    for bad in (conflicting, declined, storm):
        assert bad.request_id in error

    items = _items(database_url, run_id)
    outcomes = Counter(item.outcome for item in items)
    assert outcomes == {"invoiced": 55, "invalid": 2, "conflict": 1, "refused": 1, "temporary": 1}
    by_request = {item.request_id: item for item in items}
    assert "sll" in (by_request[declined.request_id].reason or "").lower()
    assert "already submitted with different content" in (
        by_request[conflicting.request_id].reason or ""
    )
    assert _run(database_url, run_id).attempts == 1
    _assert_table_artifact(run_id, invoiced=55, failures=5)
    _assert_each_invoice_in_a_chunk_table(f"billing-run-{run_id}", good, stripe_client)

    # The storm is over: rerunning the source retries only the temporary failure.
    sandbox.configure(faults=[])
    before = {item.position: item.updated_at for item in items}
    again = run_cli("batch", str(source), env=env, timeout=900)

    assert again.returncode == 7, (again.stdout, again.stderr[-3000:])
    assert f"billing run {run_id} (attempt 2): 60 requests: 56 invoiced" in again.stdout
    assert f"failed {prefix}-storm" not in again.stdout
    _assert_invoiced_once(stripe_client, [*good, storm])
    touched = [
        i.request_id for i in _items(database_url, run_id) if i.updated_at != before[i.position]
    ]
    assert touched == [storm.request_id]


def _assert_table_artifact(run_id: str, *, invoiced: int, failures: int) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    key = manifest.artifact_key(run_id)
    with get_client(sync_client=True) as client:
        [table] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
        [summary] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{key}-summary"]))
        )
    assert table.type == "table"
    rows = json.loads(str(table.data))
    counts = {row["outcome"]: row["count"] for row in rows if not row["request"]}
    assert counts["invoiced"] == invoiced
    assert len([row for row in rows if row["request"]]) == failures
    assert f"| invoiced | {invoiced} |" in str(summary.data)
    assert "sk_test" not in str(table.data) + str(summary.data)


def _assert_each_invoice_has_its_story(requests: list[BillingRequest]) -> None:
    """The UI shows each invoice: a task run named by its request, and its artifact."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        TaskRunFilter,
        TaskRunFilterName,
    )

    from invoiceflow.story import artifact_key

    names = [f"invoice-{request.request_id}" for request in requests]
    keys = [artifact_key(request.request_id) for request in requests]
    with get_client(sync_client=True) as client:

        def named() -> set[str]:  # task runs are recorded from events, a moment later
            found = client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=names))
            )
            return {run.name for run in found if run.state and run.state.is_completed()}

        wait_for(lambda: named() == set(names), "a completed task run per invoice")
        stories = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    assert {story.key for story in stories} == set(keys)


# --- killed mid-run, rerun --------------------------------------------------------


@pytest.mark.heavy  # a real `invoiceflow batch` process, SIGKILLed
@pytest.mark.usefixtures("prefect_api")
def test_a_killed_run_resumes_only_what_did_not_finish_and_duplicates_nothing(
    sandbox: Any, stripe_client: stripe.StripeClient, database_url: str, tmp_path: Path
) -> None:
    from invoiceflow.db.engine import get_engine

    requests = _requests(f"k{uuid.uuid4().hex[:6]}", 24)
    source = _jsonl(tmp_path / "december.jsonl", [_as_json(r) for r in requests])
    run_id = _run_id_of(source)
    env = app_env(sandbox.url, database_url, INVOICEFLOW_BATCH_WORKERS="3")
    # Slow enough that the run is still busy when it is killed.
    sandbox.configure(latency_ms=40)
    engine = get_engine(database_url)

    def sent() -> int:
        with Session(engine) as session:
            rows = session.exec(select(BillingRequestRow)).all()
        return sum(1 for row in rows if row.point is RecoveryPoint.SENT)

    process = subprocess.Popen(
        [sys.executable, "-m", "invoiceflow", "batch", str(source)],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: sent() >= 6, "six requests sent", timeout=600)
        process.send_signal(signal.SIGKILL)
    finally:
        output = process.communicate(timeout=60)[0].decode(errors="replace")
    assert process.returncode == -signal.SIGKILL, output
    before = {item.position: item for item in _items(database_url, run_id)}
    finished_before = {p for p, item in before.items() if item.outcome is not None}
    assert len(finished_before) < len(requests), "the run finished before it was killed"
    sandbox.configure(latency_ms=0)

    rerun = run_cli("batch", str(source), env=env, timeout=900)

    assert rerun.returncode == 0, (rerun.stdout, rerun.stderr[-3000:])
    assert f"billing run {run_id} (attempt 2): 24 requests: 24 invoiced" in rerun.stdout
    _assert_invoiced_once(stripe_client, requests)
    after = {item.position: item for item in _items(database_url, run_id)}
    assert {item.outcome for item in after.values()} == {"invoiced"}
    for position in finished_before:  # the rerun did not touch what had finished
        assert after[position].updated_at == before[position].updated_at
    with Session(engine) as session:
        attempts = {row.request_id: row.attempts for row in session.exec(select(BillingRequestRow))}
    for position in finished_before:
        assert attempts[requests[position].request_id] == 1
    assert _run(database_url, run_id).attempts == 2


@pytest.mark.heavy  # a real `invoiceflow batch` process, SIGINTed
@pytest.mark.usefixtures("prefect_api")
def test_ctrl_c_says_how_to_resume_and_exits_130(
    sandbox: Any, stripe_client: stripe.StripeClient, sqlite_url: str, tmp_path: Path
) -> None:
    from invoiceflow.db.engine import get_engine

    requests = _requests(f"i{uuid.uuid4().hex[:6]}", 12)
    source = _jsonl(tmp_path / "interrupted.jsonl", [_as_json(r) for r in requests])
    run_id = _run_id_of(source)
    env = app_env(sandbox.url, sqlite_url, INVOICEFLOW_BATCH_WORKERS="2")
    sandbox.configure(latency_ms=40)
    engine = get_engine(sqlite_url)

    def started() -> bool:
        with Session(engine) as session:
            return session.exec(select(BillingRequestRow)).first() is not None

    process = subprocess.Popen(
        [sys.executable, "-m", "invoiceflow", "batch", str(source)],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(started, "the first request recorded", timeout=600)
        process.send_signal(signal.SIGINT)
    finally:
        stdout, stderr = (out.decode(errors="replace") for out in process.communicate(timeout=60))
    assert process.returncode == 130, (stdout, stderr)
    assert f"interrupted; rerun `invoiceflow batch {source} --run-id {run_id}` to resume" in stderr
    assert "Traceback" not in stderr
    sandbox.configure(latency_ms=0)

    rerun = run_cli("batch", str(source), "--run-id", run_id, env=env, timeout=900)

    assert rerun.returncode == 0, (rerun.stdout, rerun.stderr[-3000:])
    _assert_invoiced_once(stripe_client, requests)


# --- sources ------------------------------------------------------------------------


CSV_HEADER = (
    "request_id,customer_id,customer_email,customer_name,currency,sku,name,"
    "unit_amount,unit_price,quantity,description,days_until_due"
)


@pytest.mark.heavy  # three billing runs through `invoiceflow batch` subprocesses
@pytest.mark.usefixtures("prefect_api")
def test_csv_directory_and_pending_sources(
    sandbox: Any, stripe_client: stripe.StripeClient, sqlite_url: str, tmp_path: Path
) -> None:
    from invoiceflow import ledger
    from invoiceflow.db.engine import get_engine

    prefix = f"s{uuid.uuid4().hex[:6]}"
    env = app_env(sandbox.url, sqlite_url)
    csv_file = _write_csv(tmp_path / "batch.csv", prefix)
    result = run_cli("batch", str(csv_file), env=env, timeout=600)
    assert result.returncode == 0, (result.stdout, result.stderr[-3000:])
    assert "2 requests: 2 invoiced" in result.stdout
    assert "invoiced 135.50 USD" in result.stdout and "invoiced 24.00 EUR" in result.stdout
    [c1] = _invoices_by_request(stripe_client)[f"{prefix}-c1"]
    assert (c1.total, c1.currency) == (3 * 1200 + 9950, "usd")

    directory = tmp_path / "requests"
    directory.mkdir()
    d1 = make_request(f"{prefix}-d1", items=ONE_LINE)
    d2 = make_request(f"{prefix}-d2", customer="globex", items=ONE_LINE)
    (directory / "d1.json").write_text(_as_json(d1))
    (directory / "d2.yaml").write_text(yaml.safe_dump(d2.model_dump(mode="json")))
    (directory / "notes.txt").write_text("not a request")
    (directory / "bad.yml").write_text("request_id: bad\ncurrency: usd\n")
    result = run_cli("batch", str(directory), env=env, timeout=600)
    assert result.returncode == 7, (result.stdout, result.stderr[-3000:])
    assert "3 requests: 2 invoiced, 1 invalid" in result.stdout
    assert "failed entry 0: invalid: bad.yml: customer: is required" in result.stdout

    # Pending: recorded in our database, never sent (a crash, a failure, an import).
    engine = get_engine(sqlite_url)
    pending = [make_request(f"{prefix}-p{n}", items=ONE_LINE) for n in range(2)]
    for request in pending:
        ledger.submit(engine, request)
    result = run_cli("batch", "pending", env=env, timeout=600)
    assert result.returncode == 0, (result.stdout, result.stderr[-3000:])
    assert "2 requests: 2 invoiced" in result.stdout
    _assert_invoiced_once(stripe_client, [*pending, d1, d2])
    # Nothing is pending any more: an empty source is an error, not a silent success.
    empty = run_cli("batch", "pending", env=env, timeout=120)
    assert empty.returncode == 2
    assert empty.stderr.strip().splitlines()[-1].startswith("error: source 'pending' holds no")


def _write_csv(path: Path, prefix: str, *more_rows: str) -> Path:
    """Two requests: c1 of two lines in USD (one priced as a decimal), c2 in EUR."""
    path.write_text(
        "\n".join(
            [
                CSV_HEADER,
                f"{prefix}-c1,acme,billing@acme.example,Acme,usd,seat,Seat,1200,,3,November,14",
                f"{prefix}-c1,acme,billing@acme.example,Acme,usd,setup,Setup,,99.50,1,,14",
                f"{prefix}-c2,globex,ap@globex.example,Globex,eur,seat,Seat,,12.00,2,,",
                *more_rows,
            ]
        )
        + "\n"
    )
    return path


@pytest.mark.usefixtures("prefect_api")  # the billing run's orchestration contract
def test_a_billing_run_of_chunks_of_one_reports_and_tells_each_invoice_story(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """`invoiceflow batch` in process on the session's Prefect server, with
    INVOICEFLOW_BATCH_CHUNK=1 (a task per request, as before chunks): the report on
    stdout, exit 7 for the bad request, the run's table and summary artifacts, and a
    completed task run and a story artifact per invoice."""
    prefix = f"o{uuid.uuid4().hex[:6]}"
    zero = f"{prefix}-c3,acme,billing@acme.example,Acme,usd,seat,Seat,1200,,0,,"
    csv_file = _write_csv(tmp_path / "batch.csv", prefix, zero)
    env = app_env(sandbox.url, sqlite_url, INVOICEFLOW_BATCH_CHUNK="1")
    run_cli = configured_cli(monkeypatch, request, env)

    result = run_cli("batch", str(csv_file))

    assert result.exit_code == 7, (result.stdout, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    run_id = _run_id_of(csv_file)
    assert f"billing run {run_id} (attempt 1): 3 requests: 2 invoiced, 1 invalid" in result.stdout
    assert "invoiced 135.50 USD" in result.stdout and "invoiced 24.00 EUR" in result.stdout
    [failed] = [line for line in result.stdout.splitlines() if line.startswith("failed ")]
    assert "invalid: " in failed and "quantity: must be at least 1, got 0" in failed
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error.startswith("error: 1 of 3 requests failed (")
    [c1] = _invoices_by_request(stripe_client)[f"{prefix}-c1"]
    assert (c1.total, c1.currency) == (3 * 1200 + 9950, "usd")
    billed = [entry.request for entry in read_source(str(csv_file)).entries if entry.request]
    assert [r.request_id for r in billed] == [f"{prefix}-c1", f"{prefix}-c2"]
    _assert_invoiced_once(stripe_client, billed)
    _assert_table_artifact(run_id, invoiced=2, failures=1)
    _assert_each_invoice_has_its_story(billed)


@pytest.mark.usefixtures("prefect_api")
def test_a_billing_run_bills_in_chunks_and_a_failed_request_fails_the_run_not_its_chunk(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """Seven requests in chunks of 3 on one thread (min(3, ceil(7 / (1 thread x 2))) = 3):
    three tasks named by their range, each bills its requests once and publishes one
    table of them. The second request, refused by Stripe, is its row's outcome: its
    chunk bills the third. The run started from the CLI is named after its run id,
    ends Failed saying which request failed, and is tagged like an invoice run."""
    prefix = f"h{uuid.uuid4().hex[:6]}"
    requests = _requests(prefix, 7)
    refused = make_request(  # the sandbox, like many Stripe accounts, takes no leones
        requests[1].request_id,
        customer=f"{prefix}-sll",
        currency="sll",
        items=[{"sku": f"{prefix}-sll", "name": "Seat (SLL)", "unit_amount": 1200}],
    )
    requests[1] = refused
    source = _jsonl(tmp_path / "chunked.jsonl", [_as_json(r) for r in requests])
    env = app_env(
        sandbox.url, sqlite_url, INVOICEFLOW_BATCH_CHUNK="3", INVOICEFLOW_BATCH_WORKERS="1"
    )
    run_cli = configured_cli(monkeypatch, request, env)

    result = run_cli("batch", str(source))

    assert result.exit_code == 7, (result.stdout, result.stderr[-3000:])
    run_id = _run_id_of(source)
    assert f"{run_id} (attempt 1): 7 requests: 6 invoiced, 1 refused" in result.stdout
    assert f"failed {refused.request_id}: refused: create price " in result.stdout
    good = [r for r in requests if r is not refused]
    _assert_invoiced_once(stripe_client, good)
    assert not _invoices_by_request(stripe_client).get(refused.request_id)
    outcomes = [(item.request_id, item.outcome) for item in _items(sqlite_url, run_id)]
    assert outcomes == [(r.request_id, "refused" if r is refused else "invoiced") for r in requests]
    _assert_table_artifact(run_id, invoiced=6, failures=1)

    run = _flow_run(f"billing-run-{run_id}")
    assert run.state is not None and run.state.type.value == "FAILED"
    assert run.state.name == "Failed"
    assert run.state.message == f"1 of 7 requests failed ({refused.request_id})"
    assert {"trigger:cli", "currency:usd", "failed:refused"} <= set(run.tags), run.tags
    assert f"billing-run:{run_id}" not in run.tags  # its shard runs' tag
    tables = _chunk_tables(run.id, ["bill requests 1-3", "bill requests 4-6", "bill request 7"])
    invoices = {r: found[0] for r, found in _invoices_by_request(stripe_client).items()}
    chunks = [requests[0:3], requests[3:6], requests[6:7]]
    for chunk, rows in zip(chunks, tables.values(), strict=True):
        assert [row["request"] for row in rows] == [r.request_id for r in chunk]
        for billing_request, row in zip(chunk, rows, strict=True):
            assert row["customer"] == billing_request.customer.id
            if billing_request is refused:
                assert (row["outcome"], row["invoice"], row["link"]) == ("refused", "", "")
                assert "sll" in row["reason"].lower()
                continue
            invoice = invoices[billing_request.request_id]
            assert (row["amount"], row["outcome"]) == ("24.00 USD", "invoiced")
            assert row["invoice"] == f"{invoice.id} ({invoice.number})"
            assert row["link"] and row["link"] == invoice.hosted_invoice_url


@pytest.mark.usefixtures("prefect_api")
def test_a_billing_run_with_every_request_invoiced_ends_completed_in_chunks_for_every_thread(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """Three requests on two threads: chunks of min(10, ceil(3 / (2 x 2))) = 1, so both
    threads get work; the run ends Completed with its report's first line."""
    requests = _requests(f"g{uuid.uuid4().hex[:6]}", 3)
    source = _jsonl(tmp_path / "good.jsonl", [_as_json(r) for r in requests])
    env = app_env(sandbox.url, sqlite_url, INVOICEFLOW_BATCH_WORKERS="2")
    run_cli = configured_cli(monkeypatch, request, env)

    result = run_cli("batch", str(source))

    assert result.exit_code == 0, (result.stdout, result.stderr[-3000:])
    _assert_invoiced_once(stripe_client, requests)
    run_id = _run_id_of(source)
    run = _flow_run(f"billing-run-{run_id}")
    assert run.state is not None and run.state.is_completed() and run.state.name == "Completed"
    assert run.state.message == f"billing run {run_id} (attempt 1): 3 requests: 3 invoiced"
    assert {"trigger:cli", "currency:usd"} <= set(run.tags)
    assert not [tag for tag in run.tags if tag.startswith("failed:")]
    tables = _chunk_tables(run.id, ["bill request 1", "bill request 2", "bill request 3"])
    assert [rows[0]["outcome"] for rows in tables.values()] == ["invoiced"] * 3


def test_chunks_are_capped_by_the_setting_and_shared_by_the_threads() -> None:
    from invoiceflow.batch import chunks

    assert chunks.size(7, workers=1, cap=3) == 3
    assert chunks.size(300, workers=8, cap=10) == 10  # large runs: the cap
    assert chunks.size(100, workers=8, cap=10) == 7  # 15 chunks: about two per thread
    assert chunks.size(3, workers=8, cap=10) == 1
    assert [list(c) for c in chunks.split(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunks.label([0, 1, 2]) == "bill requests 1-3"
    assert chunks.label([1, 4, 7]) == "bill requests 2-8 (3)"  # a shard's share
    assert chunks.label([6], again=True) == "bill request 7 again"


def _flow_run(name: str) -> Any:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )
    return run


def _assert_each_invoice_in_a_chunk_table(
    run_name: str, requests: list[BillingRequest], stripe_client: stripe.StripeClient
) -> None:
    """What the UI shows of a chunked run: every request's row, invoiced, with its
    invoice and link, in the table of the chunk that billed it (the default chunks)."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run = _flow_run(run_name)
    wanted = {request.request_id for request in requests}

    def rows() -> dict[str, dict[str, str]] | None:  # recorded from events, a moment later
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
        found = {
            row["request"]: row
            for artifact in artifacts
            if artifact.type == "table" and artifact.task_run_id is not None
            for row in json.loads(str(artifact.data))
        }
        return found if wanted <= set(found) else None

    by_request = wait_for(rows, "each request's row in its chunk's table")
    invoices = {r: found[0] for r, found in _invoices_by_request(stripe_client).items()}
    for request_id in wanted:
        invoice = invoices[request_id]
        row = by_request[request_id]
        assert (row["outcome"], row["invoice"]) == ("invoiced", f"{invoice.id} ({invoice.number})")
        assert row["link"] == invoice.hosted_invoice_url


def _chunk_tables(flow_run_id: Any, names: list[str]) -> dict[str, list[dict[str, str]]]:
    """The completed task runs of a billing run, which must be `names`, and each one's
    single table artifact: its rows, by task run name in the order of `names`."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterTaskRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with get_client(sync_client=True) as client:

        def task_runs() -> dict[str, Any] | None:  # recorded from events, a moment later
            found = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            done = [run for run in found if run.state and run.state.is_completed()]
            return {run.name: run for run in done} if len(done) >= len(names) else None

        runs = wait_for(task_runs, "a completed task run per chunk")
        assert sorted(runs) == sorted(names)

        def tables() -> dict[str, list[Any]] | None:
            by_task = {
                name: client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        task_run_id=ArtifactFilterTaskRunId(any_=[runs[name].id])
                    )
                )
                for name in names
            }
            return by_task if all(by_task.values()) else None

        artifacts = wait_for(tables, "a table artifact per chunk")
    out = {}
    for name in names:
        [table] = artifacts[name]
        assert table.type == "table" and table.key is None
        out[name] = json.loads(str(table.data))
    return out


@pytest.mark.usefixtures("configured")
def test_csv_directory_and_pending_sources_are_read_as_requests(
    stripe_client: stripe.StripeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    configured: dict[str, str],
) -> None:
    """What `batch` bills from each kind of source (the heavy tier bills each one
    through a `batch` process)."""
    from invoiceflow import ledger
    from invoiceflow.batch.source import PENDING
    from invoiceflow.runtime import get_runtime

    prefix = f"s{uuid.uuid4().hex[:6]}"
    entries = read_source(str(_write_csv(tmp_path / "batch.csv", prefix))).entries
    assert [e.problem for e in entries] == [None, None]
    totals = [
        (e.request_id, e.request.total_amount(), e.request.currency) for e in entries if e.request
    ]
    assert totals == [(f"{prefix}-c1", 3 * 1200 + 9950, "usd"), (f"{prefix}-c2", 2400, "eur")]

    directory = tmp_path / "requests"
    directory.mkdir()
    d1 = make_request(f"{prefix}-d1", items=ONE_LINE)
    d2 = make_request(f"{prefix}-d2", customer="globex", items=ONE_LINE)
    (directory / "d1.json").write_text(_as_json(d1))
    (directory / "d2.yaml").write_text(yaml.safe_dump(d2.model_dump(mode="json")))
    (directory / "notes.txt").write_text("not a request")
    (directory / "bad.yml").write_text("request_id: bad\ncurrency: usd\n")
    read = read_source(str(directory)).entries
    assert [(e.position, e.request) for e in read] == [(0, None), (1, d1), (2, d2)]
    assert (read[0].problem or "").startswith("bad.yml: customer: is required")
    assert read[1].problem is None and read[2].problem is None

    # Pending: recorded in our database, never sent (a crash, a failure, an import).
    engine = get_runtime().engine
    pending = [make_request(f"{prefix}-p{n}", items=ONE_LINE) for n in range(2)]
    for billing_request in pending:
        ledger.submit(engine, billing_request)
    assert [e.request for e in read_source(PENDING, engine).entries] == pending
    for billing_request in pending:
        bill_plain(billing_request)
    _assert_invoiced_once(stripe_client, pending)
    # Nothing is pending any more: an empty source is an error, not a silent success.
    assert read_source(PENDING, engine).entries == []
    empty = configured_cli(monkeypatch, request, configured)("batch", "pending")
    assert empty.exit_code == 2
    assert empty.stderr.strip().splitlines()[-1].startswith("error: source 'pending' holds no")


def test_csv_problems_name_the_line_and_the_field(tmp_path: Path) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(
        "\n".join(
            [
                CSV_HEADER,
                "r1,acme,billing@acme.example,Acme,usd,seat,Seat,1200,,1,,",
                "r1,acme,billing@acme.example,Acme,eur,seat,Seat,1200,,1,,",
                "r2,acme,billing@acme.example,Acme,usd,seat,Seat,12.5,,1,,",
                "r3,acme,billing@acme.example,Acme,usd,seat,Seat,1200,,1,,",
                "r3,acme,billing@acme.example,Acme,usd,extra,Extra,100,,0,,",
                ",acme,billing@acme.example,Acme,usd,seat,Seat,1200,,1,,",
            ]
        )
        + "\n"
    )
    source = read_source(str(csv_file))
    problems = [entry.problem for entry in source.entries]
    assert problems[0] == (
        "line 3: currency: differs from line 2 of request 'r1'; every row of a request "
        "must agree on it"
    )
    assert (
        problems[1] == "line 4: items[0] (line 4).unit_amount: must be a whole number, got '12.5'"
    )
    assert problems[2] == "line 5: items[1] (line 6).quantity: must be at least 1, got 0"
    assert problems[3] == "line 7: request_id: is required"
    assert len(source.digest) == 64


def test_the_readme_csv_is_two_valid_requests(tmp_path: Path) -> None:
    import re

    readme = (REPO / "docs" / "billing-cycles.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- batch:csv -->\n```csv\n(.*?)```", readme, re.DOTALL)
    assert match, "docs/billing-cycles.md has no batch:csv block"
    csv_file = tmp_path / "readme.csv"
    csv_file.write_text(match.group(1))
    entries = read_source(str(csv_file)).entries
    assert [e.problem for e in entries] == [None, None]
    totals = [
        (e.request_id, e.request.total_amount(), e.request.currency) for e in entries if e.request
    ]
    assert totals == [("2026-11-initech", 57900, "usd"), ("2026-11-umbrella", 5000, "gbp")]


def test_a_request_twice_in_one_source_is_refused_the_second_time(tmp_path: Path) -> None:
    request = make_request("twice", items=ONE_LINE)
    source = read_source(str(_jsonl(tmp_path / "twice.jsonl", [_as_json(request)] * 2)))
    assert source.entries[0].request == request
    assert source.entries[1].problem == (
        "line 2: request_id 'twice' is also at line 1; bill each request once per source "
        "(give this one a new request_id)"
    )


# --- bad sources ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.jsonl", "does not exist; give a .jsonl or .csv file"),
        (lambda d: _jsonl(d / "requests.txt", ["{}"]), "unknown file type '.txt'"),
        (lambda d: _jsonl(d / "empty.jsonl", [""]), "holds no requests; nothing to bill"),
        (lambda d: d, "holds no requests; nothing to bill"),
        (lambda d: _jsonl(d / "cols.csv", ["request_id,amount"]), "unknown column 'amount'"),
    ],
    ids=["missing", "unknown-extension", "empty-file", "empty-directory", "unknown-column"],
)
def test_a_source_that_cannot_be_billed_exits_2_and_creates_nothing(
    make: Any,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    database = tmp_path / "db" / "invoiceflow.db"
    database.parent.mkdir()
    run_cli = configured_cli(
        monkeypatch, request, app_env("http://127.0.0.1:9", f"sqlite:///{database}")
    )

    result = run_cli("batch", str(make(source_dir)))

    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: source ") and message in line
    assert not database.exists()  # a file source is read before the database is opened


def test_a_run_id_reused_for_other_content_exits_2_naming_the_fix(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from invoiceflow.db.engine import get_engine

    first = _jsonl(tmp_path / "a.jsonl", [_as_json(make_request("a-1", items=ONE_LINE))])
    manifest.start(get_engine(sqlite_url), "monthly", read_source(str(first)))
    other = _jsonl(tmp_path / "b.jsonl", [_as_json(make_request("b-1", items=ONE_LINE))])
    run_cli = configured_cli(monkeypatch, request, app_env("http://127.0.0.1:9", sqlite_url))

    result = run_cli("batch", str(other), "--run-id", "monthly")

    assert result.exit_code == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: run id 'monthly' already bills other content (")
    assert "use a new --run-id for this source" in line
    bad_id = run_cli("batch", str(other), "--run-id", "no spaces")
    assert bad_id.exit_code == 2
    assert bad_id.stderr.startswith("error: --run-id 'no spaces' must be")
