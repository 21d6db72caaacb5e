"""Reconciliation end to end: the sandbox over HTTP with no webhook receiver running
(the receiver was down), SQLite and PostgreSQL.

The rules run through the plain functions the reconcile flow runs
(`invoiceflow.reconcile.sweep.reconcile`), with requests billed and resumed through
the plain pipeline (`bill_plain`; the flow resumes with the invoice flow, which runs
the same steps as tasks). The flow itself, with the CLI's output and exit codes, is
proven once on the session's Prefect server (`test_cli_prints_changes_and_exits_by_outcome`);
a run SIGKILLed after Stripe sent is in the heavy tier.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from sqlmodel import func, select

from invoiceflow import ledger
from invoiceflow.db.engine import get_engine, reading, transaction
from invoiceflow.db.models import AuditEvent, RecoveryPoint, SyncCursor
from invoiceflow.reconcile.report import ReconcileReport
from invoiceflow.reconcile.stuck import is_temporary
from invoiceflow.reconcile.sweep import reconcile
from invoiceflow.reconcile.window import (
    CURSOR_NAME,
    BadSince,
    advance_cursor,
    parse_since,
    read_cursor,
)
from invoiceflow.runtime import get_runtime
from invoiceflow.status import RequestStatus
from invoiceflow.stripe_keys import META_REQUEST_ID
from invoiceflow.webhooks.inbox import InboxEvent
from tests.helpers import (
    assert_exactly_one_invoice,
    bill_plain,
    crash_cli_at,
    make_request,
    sent_events,
    wait_for,
)
from tests.inprocess_cli import in_process_cli
from tests.webhooks import moves_to

# A Stripe write that fails on every try of a run (retries and task retries
# included), leaving the request failed on a temporary error just before it.
ALWAYS = 1000
# The behaviour these check does not depend on the database; the main test runs on both.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _engine(configured: dict[str, str]) -> Any:
    return get_engine(configured["INVOICEFLOW_DATABASE_URL"])


def _sent(request_id: str) -> str:
    """A request run to `sent` with no receiver listening; its invoice id."""
    status: RequestStatus = bill_plain(make_request(request_id))
    assert status.state is RecoveryPoint.SENT and status.stripe_invoice_id
    return status.stripe_invoice_id


def _failing_at(sandbox: Any, path: str, request_id: str) -> None:
    """Run a request whose `path` write always fails: it ends failed just before it."""
    sandbox.configure(
        faults=[{"method": "POST", "path": path, "when": "before_write", "times": ALWAYS}]
    )
    with pytest.raises(stripe.APIError):
        bill_plain(make_request(request_id))
    sandbox.configure(faults=[])


def _point(engine: Any, request_id: str) -> RecoveryPoint:
    return ledger.require(engine, request_id).point


def _counts(engine: Any) -> tuple[int, int, list[str]]:
    """Audit rows, inbox rows, and every request's point: what a no-op must leave alone."""
    with reading(engine) as session:
        audit = session.exec(select(func.count()).select_from(AuditEvent)).one()
        inbox = session.exec(select(func.count()).select_from(InboxEvent)).one()
    points = [f"{row.request_id}={row.recovery_point}" for row in ledger.list_requests(engine)]
    return audit, inbox, points


def _reconcile(since: datetime | None = None, stale_minutes: float = 10) -> ReconcileReport:
    """What the reconcile flow runs (its defaults too), resuming stuck requests in sequence."""
    rt = get_runtime()
    report = reconcile(rt, since=since, stale_minutes=stale_minutes, resume=bill_plain)
    assert isinstance(report, ReconcileReport)
    return report


def test_receiver_down_paid_void_uncollectible_applied_exactly_once(
    configured: dict[str, str], stripe_client: stripe.StripeClient, database_url: str
) -> None:
    engine = _engine(configured)
    paid, void, lost = (_sent(f"req-{name}") for name in ("paid", "void", "lost"))
    # What a person does in the Dashboard while our receiver is down.
    stripe_client.v1.invoices.pay(paid, {"paid_out_of_band": True})
    stripe_client.v1.invoices.void_invoice(void)
    stripe_client.v1.invoices.mark_uncollectible(lost)
    assert {_point(engine, r) for r in ("req-paid", "req-void", "req-lost")} == {RecoveryPoint.SENT}

    report = _reconcile(stale_minutes=0)

    assert _point(engine, "req-paid") is RecoveryPoint.PAID
    assert _point(engine, "req-void") is RecoveryPoint.VOID
    assert _point(engine, "req-lost") is RecoveryPoint.UNCOLLECTIBLE
    for request_id, point in (
        ("req-paid", "paid"),
        ("req-void", "void"),
        ("req-lost", "uncollectible"),
    ):
        assert moves_to(engine, request_id, point) == 1, request_id
    assert (
        ledger.require(engine, "req-paid").amount_paid
        == ledger.require(engine, "req-paid").total_amount
    )
    # Every settling event Stripe holds is in the inbox exactly once, applied by the sweep.
    stripe_events = {
        event.id
        for event in stripe_client.v1.events.list(
            {
                "types": ["invoice.paid", "invoice.voided", "invoice.marked_uncollectible"],
                "limit": 100,
            }
        ).auto_paging_iter()
    }
    with reading(engine) as session:
        kept = [row.event_id for row in session.exec(select(InboxEvent)).all()]
    assert stripe_events <= set(kept) and len(kept) == len(set(kept))
    assert report.events_applied == 3 and report.settled == 0 and report.resumed == 0
    assert report.drift == [] and report.failures == []
    assert len(report.changes) == 3
    assert any(line.startswith("event ") and "req-void is void" in line for line in report.changes)
    cursor = read_cursor(engine)
    assert cursor is not None

    before = _counts(engine)
    again = _reconcile(stale_minutes=0)

    assert again.clean and again.summary().startswith("nothing to change")
    assert _counts(engine) == before
    assert read_cursor(engine) == cursor


@SQLITE_ONLY
def test_settlement_with_no_event_left_is_read_from_the_invoice(
    configured: dict[str, str], stripe_client: stripe.StripeClient, database_url: str
) -> None:
    """Events past Stripe's retention (here: a cursor past them) leave the invoice sweep."""
    engine = _engine(configured)
    invoice_id = _sent("req-old")
    stripe_client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
    newest = max(e.created for e in stripe_client.v1.events.list({"limit": 100}).auto_paging_iter())
    advance_cursor(engine, newest + 3600)

    report = _reconcile(stale_minutes=0)

    assert report.events_applied == 0 and report.settled == 1
    assert report.changes == [f"settled req-old: invoice {invoice_id} is paid"]
    assert _point(engine, "req-old") is RecoveryPoint.PAID
    assert moves_to(engine, "req-old", "paid") == 1
    assert _reconcile(stale_minutes=0).clean


def test_request_stuck_before_send_is_finished_and_sent_once(
    configured: dict[str, str],
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
) -> None:
    engine = _engine(configured)
    _failing_at(sandbox, r"^/v1/invoices/[^/]+/send$", "req-stuck")
    row = ledger.require(engine, "req-stuck")
    assert row.point is RecoveryPoint.FAILED and row.progress is RecoveryPoint.FINALIZED

    fresh = _reconcile()  # just failed: not stale yet, a person may be on it
    assert fresh.resumed == 0 and _point(engine, "req-stuck") is RecoveryPoint.FAILED

    report = _reconcile(stale_minutes=0)

    assert report.resumed == 1
    assert report.changes == [f"resumed req-stuck: finalized → sent ({row.stripe_invoice_id})"]
    assert _point(engine, "req-stuck") is RecoveryPoint.SENT
    invoice = assert_exactly_one_invoice(stripe_client, make_request("req-stuck"))
    assert sent_events(stripe_client, invoice.id) == 1
    assert _reconcile(stale_minutes=0).clean


@pytest.mark.heavy  # a real `invoiceflow invoice` process, SIGKILLed
@pytest.mark.usefixtures("prefect_api")
def test_a_run_killed_after_stripe_sent_is_finished_without_a_second_email(
    configured: dict[str, str],
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
    tmp_path: Path,
) -> None:
    """The process died after Stripe emailed the invoice and before we recorded it."""
    engine = _engine(configured)
    request = make_request("req-killed")
    crash_cli_at(
        sandbox, request, r"^/v1/invoices/[^/]+/send$", "stall_after_write", configured, tmp_path
    )
    row = ledger.require(engine, "req-killed")
    assert row.point is RecoveryPoint.FINALIZED and row.lease_owner is not None
    # The dead run's lease runs out by itself (INVOICEFLOW_LEASE_SECONDS=3); until
    # then a run may still hold the request, and reconcile must leave it alone.
    wait_for(
        lambda: (ledger.require(engine, "req-killed").lease_expires_at or 0) < time.time(),
        "the killed run's lease to expire",
    )

    report = _reconcile(stale_minutes=0)

    assert report.changes == [f"resumed req-killed: finalized → sent ({row.stripe_invoice_id})"]
    assert _point(engine, "req-killed") is RecoveryPoint.SENT
    assert_exactly_one_invoice(stripe_client, request)  # one invoice.sent among them
    assert _reconcile(stale_minutes=0).clean


def test_a_draft_edited_by_hand_is_reported_and_never_finalized(
    configured: dict[str, str],
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
) -> None:
    engine = _engine(configured)
    _failing_at(sandbox, r"^/v1/invoices/[^/]+/finalize$", "req-edited")
    row = ledger.require(engine, "req-edited")
    assert row.progress is RecoveryPoint.LINES_ADDED and row.stripe_invoice_id
    [line, *_] = stripe_client.v1.invoices.line_items.list(row.stripe_invoice_id).data
    stripe_client.v1.invoices.update_lines(
        row.stripe_invoice_id, {"lines": [{"id": line.id, "quantity": 9}]}
    )
    before = _counts(engine)

    report = _reconcile(stale_minutes=0)

    assert report.resumed == 0 and report.changes == []
    [drift] = report.drift
    assert drift.startswith(f"req-edited: draft {row.stripe_invoice_id} line ")
    assert "edited by hand" in drift and drift.endswith("left alone")
    assert stripe_client.v1.invoices.retrieve(row.stripe_invoice_id).status == "draft"
    assert _counts(engine) == before


@SQLITE_ONLY
def test_an_invoice_voided_and_recreated_by_hand_is_settled_and_reported(
    configured: dict[str, str], stripe_client: stripe.StripeClient, database_url: str
) -> None:
    engine = _engine(configured)
    invoice_id = _sent("req-redo")
    original = stripe_client.v1.invoices.retrieve(invoice_id)
    stripe_client.v1.invoices.void_invoice(invoice_id)
    assert isinstance(original.customer, str)
    redo = stripe_client.v1.invoices.create(
        {"customer": original.customer, "metadata": {META_REQUEST_ID: "req-redo"}}
    )
    stranger = stripe_client.v1.invoices.create(
        {"customer": original.customer, "metadata": {META_REQUEST_ID: "req-nobody"}}
    )

    report = _reconcile(stale_minutes=0)

    assert _point(engine, "req-redo") is RecoveryPoint.VOID  # Stripe's fact, applied
    assert set(report.drift) == {
        f"req-redo: invoice {redo.id} carries this request id, but the request's invoice "
        f"is {invoice_id}; left alone",
        f"req-nobody: invoice {stranger.id} carries this request id, which our ledger "
        "does not know; left alone",
    }
    assert stripe_client.v1.invoices.retrieve(redo.id).status == "draft"


@SQLITE_ONLY
def test_an_invoice_gone_from_stripe_though_recorded_sent_is_reported(
    configured: dict[str, str], stripe_client: stripe.StripeClient, database_url: str
) -> None:
    """As after restoring another environment's database: our id names no invoice."""
    engine = _engine(configured)
    real = _sent("req-gone")
    with transaction(engine) as session:
        row = ledger.lock_row(session, "req-gone")
        assert row is not None
        row.stripe_invoice_id = "in_restoredelsewhere"
        session.add(row)
    before = _counts(engine)

    report = _reconcile(stale_minutes=0)

    assert set(report.drift) == {
        "req-gone: invoice in_restoredelsewhere is gone from Stripe, though we recorded it "
        "finalized; left alone",
        f"req-gone: invoice {real} carries this request id, but the request's invoice is "
        "in_restoredelsewhere; left alone",
    }
    assert report.changes == [] and _counts(engine) == before


@SQLITE_ONLY
def test_a_sweep_past_stripes_event_retention_says_so(
    configured: dict[str, str], stripe_client: stripe.StripeClient, database_url: str
) -> None:
    invoice_id = _sent("req-late")
    stripe_client.v1.invoices.void_invoice(invoice_id)

    report = _reconcile(since=datetime.now(UTC) - timedelta(days=40), stale_minutes=0)

    [note] = report.notes
    assert "Stripe keeps events for 30 days" in note
    assert report.events_applied == 1
    assert _point(_engine(configured), "req-late") is RecoveryPoint.VOID


@SQLITE_ONLY
@pytest.mark.usefixtures("prefect_api")  # the reconcile flow's contract: it runs here
def test_cli_prints_changes_and_exits_by_outcome(
    configured: dict[str, str],
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    run_cli = in_process_cli(monkeypatch, request)
    for bad in ("yesterday", "2026-13-01", "7w", "2999-01-01"):
        refused = run_cli("reconcile", "--since", bad)
        assert refused.exit_code == 2, (bad, refused.stderr)
        assert refused.stderr.startswith("error: --since must ") and refused.stderr.count("\n") == 1
        assert "Traceback" not in refused.stderr and refused.stdout == ""
    negative = run_cli("reconcile", "--stale-minutes", "-1")
    assert negative.exit_code == 2 and negative.stderr.startswith("error: --stale-minutes")

    invoice_id = _sent("req-cli")
    stripe_client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
    done = run_cli("reconcile", "--since", "1d", "--stale-minutes", "0")
    assert done.exit_code == 0, done.stderr
    *changes, summary = done.stdout.splitlines()
    assert len(changes) == 1 and changes[0].startswith("event evt_")
    assert changes[0].endswith("(invoice.paid): request req-cli is paid")
    assert summary == "reconciled: 1 event applied, 0 settled, 0 resumed, 0 drift, 0 unchanged"
    assert "… applying" in done.stderr  # progress on stderr

    quiet = run_cli("reconcile")
    assert quiet.exit_code == 0, quiet.stderr
    assert quiet.stdout.splitlines() == ["nothing to change (0 unchanged)"]

    _failing_at(sandbox, r"^/v1/invoices/[^/]+/finalize$", "req-drift")
    draft = ledger.require(_engine(configured), "req-drift").stripe_invoice_id
    assert draft
    [line, *_] = stripe_client.v1.invoices.line_items.list(draft).data
    stripe_client.v1.invoices.update_lines(draft, {"lines": [{"id": line.id, "quantity": 2}]})
    drifted = run_cli("reconcile", "--stale-minutes", "0")
    assert drifted.exit_code == 4, drifted.stderr
    assert [ln for ln in drifted.stdout.splitlines() if ln.startswith("drift: req-drift: draft ")]
    assert drifted.stdout.splitlines()[-1].startswith("reconciled: 0 events applied")


@SQLITE_ONLY
def test_a_since_after_the_cursor_leaves_the_cursor_alone(
    configured: dict[str, str], stripe_client: stripe.StripeClient, database_url: str
) -> None:
    """Events between the cursor and a later `--since` were not swept: no skipping them."""
    engine = _engine(configured)
    invoice_id = _sent("req-gap")
    stripe_client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
    advance_cursor(engine, 1_000)  # long before any event

    report = _reconcile(since=datetime.now(UTC) - timedelta(minutes=30), stale_minutes=0)

    assert report.events_applied == 1
    assert read_cursor(engine) == 1_000


@SQLITE_ONLY
def test_the_cursor_only_moves_forward(configured: dict[str, str], database_url: str) -> None:
    engine = _engine(configured)
    assert read_cursor(engine) is None
    assert advance_cursor(engine, 100)
    assert not advance_cursor(engine, 50) and not advance_cursor(engine, 100)
    assert advance_cursor(engine, 200)
    with reading(engine) as session:
        cursor = session.get(SyncCursor, CURSOR_NAME)
    assert cursor is not None and cursor.position == 200


NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("12h", NOW - timedelta(hours=12)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T08:00Z", datetime(2026, 11, 1, 8, tzinfo=UTC)),
        ("2026-11-01T09:00+01:00", datetime(2026, 11, 1, 8, tzinfo=UTC)),
    ],
)
def test_since_reads_dates_and_ages(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "7w", "-7d", "2026-11-31", "2026-12-01"])
def test_since_refuses_what_it_cannot_read_or_the_future(text: str) -> None:
    with pytest.raises(BadSince, match=r"^--since must "):
        parse_since(text, now=NOW)


@pytest.mark.parametrize(
    ("last_error", "temporary"),
    [
        ("send in_1: APIError HTTP 500 boom", True),
        ("list invoices of cus_1: APIConnectionError Could not connect", True),
        ("RateLimitError HTTP 429 slow down", True),
        ("OperationalError: database is locked", True),
        ("InvoiceMismatch: invoice in_1 holds line il_1 that invoiceflow did not add", False),
        ("CardError HTTP 402 card_declined: Your card was declined.", False),
        (None, False),
    ],
)
def test_only_temporary_failures_are_resumed(last_error: str | None, temporary: bool) -> None:
    assert is_temporary(last_error) is temporary
