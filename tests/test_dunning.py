"""Dunning against the real sandbox and real databases.

Time is simulated with `as_of`: the sandbox's clock stays where it is, and dunning
is told which day it is, so a whole month runs in seconds.

The rules run through the plain functions the dunning flow runs (`act.candidates`,
then `act.dun` for each request, in sequence: tests/dunning_runs.py), with requests billed
through the plain pipeline. The flow itself, with the CLI's lines and exit codes, is
proven once on the session's Prefect server (`test_the_cli_prints_each_step_…`); a
run SIGKILLed mid-reminder and two CLI processes at once are in the heavy tier.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from sqlmodel import select

from invoiceflow import ledger
from invoiceflow.db.engine import reading
from invoiceflow.db.models import DunningStep
from invoiceflow.dunning.plan import Cadence, plan
from invoiceflow.dunning.report import DunningReport, Outcome
from invoiceflow.runtime import get_runtime, reset_runtime
from invoiceflow.status import RequestStatus
from tests.conftest import REPO
from tests.dunning_runs import dun_in_sequence as run_dunning
from tests.helpers import bill_plain, make_request, sent_events, stalled, wait_for, writes
from tests.inprocess_cli import in_process_cli

# Everything but the plan's own tests runs against the sandbox, on both databases.
stack = pytest.mark.usefixtures("configured")

DAY = timedelta(days=1)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sent(request_id: str, client: stripe.StripeClient) -> tuple[str, datetime]:
    """A request billed to `sent`: its invoice and Stripe's due date."""
    status: RequestStatus = bill_plain(
        make_request(request_id, customer=f"cust-{request_id.lower()}")
    )
    assert status.state.value == "sent", status.one_line()
    invoice_id = ledger.require(get_runtime().engine, request_id).stripe_invoice_id
    assert invoice_id is not None
    due = client.v1.invoices.retrieve(invoice_id).due_date
    assert due is not None
    return invoice_id, datetime.fromtimestamp(due, UTC)


def _steps(request_id: str) -> dict[str, tuple[str | None, bool]]:
    """Our dunning rows: step → (outcome, done)."""
    with reading(get_runtime().engine) as session:
        rows = session.exec(select(DunningStep).where(DunningStep.request_id == request_id)).all()
    return {row.step: (row.outcome, row.done_at is not None) for row in rows}


def _taken(report: DunningReport, request_id: str) -> list[tuple[str | None, str]]:
    return [
        (line.step, line.outcome.value)
        for line in report.lines
        if line.request_id == request_id and line.step is not None
    ]


def _audit(request_id: str) -> list[str]:
    return [event.message for event in ledger.audit_trail(get_runtime().engine, request_id)]


def _posts_to(sandbox: Any, suffix: str) -> int:
    return sum(1 for entry in writes(sandbox) if entry["path"].endswith(suffix))


@stack
def test_a_simulated_month_reminds_on_the_cadence_then_writes_off(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    invoice_id, due = _sent("R1", stripe_client)
    month = [
        (0.5, []),
        (1, [("reminder-1", "sent")]),
        (1.5, []),  # a rerun on the same day: nothing new
        (7, [("reminder-2", "sent")]),
        (8, []),
        (14, [("reminder-3", "sent")]),
        (29, []),
        (30, [("final", "uncollectible")]),
    ]
    reminders = 0
    for days, expected in month:
        report = run_dunning(due + days * DAY)
        assert _taken(report, "R1") == expected, f"day {days}: {report.lines}"
        reminders += sum(1 for step, _ in expected if step.startswith("reminder-"))
        assert sent_events(stripe_client, invoice_id) == 1 + reminders, f"day {days}"
    assert reminders == 3

    assert stripe_client.v1.invoices.retrieve(invoice_id).status == "uncollectible"
    row = ledger.require(get_runtime().engine, "R1")
    assert (row.recovery_point, row.invoice_status) == ("uncollectible", "uncollectible")
    assert _steps("R1") == {
        "reminder-1": ("sent", True),
        "reminder-2": ("sent", True),
        "reminder-3": ("sent", True),
        "final": ("uncollectible", True),
    }
    trail = _audit("R1")
    for message in (
        "dunning reminder-1: sent",
        "dunning reminder-2: sent",
        "dunning reminder-3: sent",
        "dunning final: uncollectible",
        "invoice uncollectible",
    ):
        assert trail.count(message) == 1, (message, trail)

    before = len(writes(sandbox))
    after = run_dunning(due + 31 * DAY)
    assert (after.candidates, after.lines) == (0, [])
    assert len(writes(sandbox)) == before
    assert sent_events(stripe_client, invoice_id) == 4


@stack
def test_a_payment_on_day_9_stops_the_sequence(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    invoice_id, due = _sent("R2", stripe_client)
    run_dunning(due + 1 * DAY)
    run_dunning(due + 7 * DAY)
    assert sent_events(stripe_client, invoice_id) == 3
    # Paid on day 9; no webhook reaches us (no endpoint is registered).
    stripe_client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})

    on_14 = run_dunning(due + 14 * DAY)
    (line,) = [line for line in on_14.lines if line.request_id == "R2"]
    assert (line.step, line.outcome, line.reason) == (None, Outcome.SETTLED, "invoice paid")
    on_30 = run_dunning(due + 30 * DAY)
    assert on_30.candidates == 0

    assert sent_events(stripe_client, invoice_id) == 3
    assert _posts_to(sandbox, "/mark_uncollectible") == _posts_to(sandbox, "/void") == 0
    assert stripe_client.v1.invoices.retrieve(invoice_id).status == "paid"
    assert ledger.require(get_runtime().engine, "R2").recovery_point == "paid"
    assert set(_steps("R2")) == {"reminder-1", "reminder-2"}


@stack
def test_a_reminder_stripe_applied_before_a_crash_is_never_emailed_again(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    invoice_id, due = _sent("R3", stripe_client)
    other_id, _ = _sent("R3-other", stripe_client)
    # Stripe emails the reminder, then every answer (replays included) is lost,
    # and Stripe's event log cannot be read either: the unit gives up with the
    # step recorded and its outcome unknown, as a run that crashed would.
    lost = {"method": "POST", "path": f"{invoice_id}/send$", "when": "drop_after_write"}
    no_events = {"method": "GET", "path": "/v1/events$", "when": "before_write"}
    sandbox.configure(faults=[{**lost, "times": 100}, {**no_events, "times": 100}])
    # An hour later: R3-other was sent a moment after R3, so it is due a moment later.
    crashed = run_dunning(due + 1 * DAY + timedelta(hours=1))
    sandbox.configure(faults=[])

    (failed,) = [line for line in crashed.lines if line.request_id == "R3"]
    assert failed.outcome is Outcome.FAILED and failed.reason
    assert _taken(crashed, "R3-other") == [("reminder-1", "sent")]  # one failing, not all
    assert _steps("R3") == {"reminder-1": (None, False)}
    assert sent_events(stripe_client, invoice_id) == 2  # applied once
    sends_before = _posts_to(sandbox, f"{invoice_id}/send")

    rerun = run_dunning(due + 2 * DAY)

    assert _taken(rerun, "R3") == [("reminder-1", "sent")]
    assert _posts_to(sandbox, f"{invoice_id}/send") == sends_before  # Stripe was asked, not told
    assert sent_events(stripe_client, invoice_id) == 2
    assert _steps("R3") == {"reminder-1": ("sent", True)}
    assert sent_events(stripe_client, other_id) == 2


@stack
def test_after_an_outage_only_the_latest_reminder_is_sent(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    invoice_id, due = _sent("R4", stripe_client)

    report = run_dunning(due + 20 * DAY)

    assert _taken(report, "R4") == [
        ("reminder-1", "skipped"),
        ("reminder-2", "skipped"),
        ("reminder-3", "sent"),
    ]
    assert sent_events(stripe_client, invoice_id) == 2
    assert _steps("R4") == {
        "reminder-1": ("skipped", True),
        "reminder-2": ("skipped", True),
        "reminder-3": ("sent", True),
    }
    assert "dunning reminder-1 skipped: missed, superseded by reminder-3" in _audit("R4")
    assert _taken(run_dunning(due + 21 * DAY), "R4") == []


@stack
def test_the_final_step_can_void_instead(
    sandbox: Any, stripe_client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INVOICEFLOW_DUNNING_FINAL_ACTION", "void")
    reset_runtime()
    invoice_id, due = _sent("R5", stripe_client)

    report = run_dunning(due + 30 * DAY)

    assert _taken(report, "R5")[-1] == ("final", "void")
    assert stripe_client.v1.invoices.retrieve(invoice_id).status == "void"
    assert ledger.require(get_runtime().engine, "R5").recovery_point == "void"
    assert _posts_to(sandbox, "/mark_uncollectible") == 0


@stack
@pytest.mark.usefixtures("prefect_api")  # the dunning flow's contract: it runs here
def test_the_cli_prints_each_step_and_refuses_a_bad_as_of(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    run_cli = in_process_cli(monkeypatch, request)
    invoice_id, due = _sent("R6", stripe_client)
    as_of = _iso(due + 8 * DAY)

    done = run_cli("dunning", "--as-of", as_of)

    assert done.exit_code == 0, done.stderr
    *steps, summary = done.stdout.splitlines()
    assert steps == [
        f"R6: reminder-1 skipped for {invoice_id}, 8 days overdue (superseded by reminder-2)",
        f"R6: reminder-2 sent for {invoice_id}, 8 days overdue",
    ]
    assert summary.startswith("dunning as of ") and "1 overdue candidate(s)" in summary
    assert sent_events(stripe_client, invoice_id) == 2

    # Stripe unreachable for this invoice all along: the request fails, the run
    # says so and exits with the failure's code (5: temporary, rerun later).
    unreadable = {"method": "GET", "path": f"/v1/invoices/{invoice_id}$", "when": "before_write"}
    sandbox.configure(faults=[{**unreadable, "times": 100}])
    failed = run_cli("dunning", "--as-of", _iso(due + 14 * DAY))
    sandbox.configure(faults=[])
    assert failed.exit_code == 5, failed.stderr
    assert failed.stdout.splitlines()[0].startswith(f"R6: failed (get {invoice_id}: APIError")
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 request(s) failed, first R6: get ")
    assert last.endswith("rerun `invoiceflow dunning` to retry them")
    assert "Traceback" not in failed.stderr
    assert sent_events(stripe_client, invoice_id) == 2

    bad = run_cli("dunning", "--as-of", "last tuesday")
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines() == [
        "error: --as-of 'last tuesday' is not a time; use an ISO 8601 time such as "
        "2026-12-31T00:00:00Z (no zone: UTC)"
    ]
    assert bad.stdout == ""


@pytest.mark.heavy  # a real `invoiceflow dunning` process, SIGKILLed
@stack
@pytest.mark.usefixtures("prefect_api")
def test_a_dunning_run_killed_after_stripe_emailed_the_reminder_is_not_repeated(
    sandbox: Any, stripe_client: stripe.StripeClient, configured: dict[str, str]
) -> None:
    invoice_id, due = _sent("R7", stripe_client)
    when = "stall_after_write"  # Stripe has emailed it; the answer is held open
    sandbox.configure(
        stall_ms=1500, faults=[{"method": "POST", "path": f"{invoice_id}/send$", "when": when}]
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "invoiceflow", "dunning", "--as-of", _iso(due + DAY)],
        env={**os.environ, **configured},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: stalled(sandbox, when), "the reminder to stall")
        process.send_signal(signal.SIGKILL)
    finally:
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert process.returncode == -signal.SIGKILL, output
    wait_for(lambda: stalled(sandbox, when)["status"] is not None, "the stalled send to end")
    sandbox.configure(faults=[])
    assert _steps("R7") == {"reminder-1": (None, False)}
    assert sent_events(stripe_client, invoice_id) == 2
    engine = get_runtime().engine
    wait_for(
        lambda: (ledger.require(engine, "R7").lease_expires_at or 0) < time.time(),
        "the killed run's lease to lapse",
    )
    sends = _posts_to(sandbox, f"{invoice_id}/send")

    rerun = run_dunning(due + 2 * DAY)

    assert _taken(rerun, "R7") == [("reminder-1", "sent")]
    assert _posts_to(sandbox, f"{invoice_id}/send") == sends
    assert sent_events(stripe_client, invoice_id) == 2
    assert _steps("R7") == {"reminder-1": ("sent", True)}


@pytest.mark.heavy  # two `invoiceflow dunning` processes racing
@stack
@pytest.mark.usefixtures("prefect_api")
def test_two_dunning_runs_at_once_send_one_reminder(
    sandbox: Any, stripe_client: stripe.StripeClient, configured: dict[str, str]
) -> None:
    invoice_id, due = _sent("R8", stripe_client)
    command = [sys.executable, "-m", "invoiceflow", "dunning", "--as-of", _iso(due + DAY)]
    runs = [
        subprocess.Popen(
            command,
            env={**os.environ, **configured},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    said = [line for out, _err in outputs for line in out.splitlines() if line.startswith("R8:")]
    # The other run found it done, or found the request busy and left it.
    assert said.count(f"R8: reminder-1 sent for {invoice_id}, 1 day overdue") == 1, said
    assert sent_events(stripe_client, invoice_id) == 2
    assert _steps("R8") == {"reminder-1": ("sent", True)}


# --- the plan, a pure function ---------------------------------------------------

DUE = datetime(2026, 12, 1, tzinfo=UTC)
CADENCE = Cadence(reminder_days=(1, 7, 14), final_days=30)


@pytest.mark.parametrize(
    ("days", "recorded", "step", "skipped"),
    [
        (-1, set(), None, []),
        (0.5, set(), None, []),
        (1, set(), "reminder-1", []),
        (3, {"reminder-1"}, None, []),
        (7, {"reminder-1"}, "reminder-2", []),
        (20, set(), "reminder-3", ["reminder-1", "reminder-2"]),
        (20, {"reminder-1"}, "reminder-3", ["reminder-2"]),
        (31, set(), "final", ["reminder-1", "reminder-2", "reminder-3"]),
        (45, {"reminder-1", "reminder-2", "reminder-3", "final"}, None, []),
    ],
)
def test_the_plan_takes_only_the_latest_due_step(
    days: float, recorded: set[str], step: str | None, skipped: list[str]
) -> None:
    due = plan(DUE, CADENCE, DUE + days * DAY, recorded)
    assert (due.step, [name for name, _at in due.skipped]) == (step, skipped)
    assert due.days_overdue == int(days // 1)


def test_without_reminders_only_the_write_off_is_planned() -> None:
    due = plan(DUE, Cadence((), 10), DUE + 12 * DAY, set())
    assert (due.step, due.skipped, due.step_due_at) == ("final", (), DUE + 10 * DAY)
