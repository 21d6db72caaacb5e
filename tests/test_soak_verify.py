"""The chaos soak's verifier judges what Stripe and our ledger really hold.

A small soak is built by hand: four requests through the real invoice flow
(one with a Stripe 500 on the way), each taken to its fate through the SDK —
paid by card, declined, voided, left open — with our webhook receiver
recording what Stripe says, a changed resubmission refused and a forged
webhook refused. The verifier must find that clean; then each way a soak can
go wrong is made for real (a second invoice, a second send, a lost payment) or
written into the soak's files, and it must name it.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stripe

from bench.soak.kinds import KINDS, parse_without
from bench.soak.verify import Verdict, _limiter_down, main, verify
from invoiceflow import ledger
from invoiceflow.db.engine import transaction
from invoiceflow.db.models import AuditEvent, RecoveryPoint
from invoiceflow.stripe_keys import META_REQUEST_ID
from tests.conftest import TEST_KEY
from tests.helpers import invoices_for, make_request, wait_for
from tests.webhooks import Receiver, inbox_rows, registered_receiver

FATES = ("pay", "decline", "void", "leave")
ITEMS = [
    {"sku": "soak-seat", "name": "Seat", "unit_amount": 1200, "quantity": 3},
    {"sku": "soak-support", "name": "Support", "unit_amount": 4999, "quantity": 1},
]
KEY_ENV = "SOAK_VERIFY_TEST_KEY"


@dataclass
class Soak:
    workdir: Path
    request_ids: dict[str, str]  # fate → request id
    invoice_ids: dict[str, str]  # fate → Stripe invoice id
    sandbox_url: str
    database_url: str
    client: stripe.StripeClient
    receiver: Receiver

    def verify(self, workdir: Path | None = None) -> Verdict:
        return verify(workdir or self.workdir, self.client, self.sandbox_url, self.database_url)

    def variant(
        self,
        tmp_path: Path,
        edit: Callable[[list[dict[str, Any]]], None] | None = None,
        journal: list[dict[str, Any]] | None = None,
    ) -> Path:
        """A copy of the soak's files, its requests edited and its journal extended."""
        copy = tmp_path / f"variant-{uuid.uuid4().hex[:6]}"
        shutil.copytree(self.workdir, copy)
        requests = _read(copy / "requests.jsonl")
        if edit:
            edit(requests)
        _write(copy / "requests.jsonl", requests)
        _write(copy / "journal.jsonl", _read(copy / "journal.jsonl") + (journal or []))
        return copy


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _write(path: Path, documents: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(doc) + "\n" for doc in documents))


def _entry(kind: str, **fields: Any) -> dict[str, Any]:
    return {"t": time.time(), "kind": kind, **fields}


@pytest.fixture
def soak(
    prefect_api: str,
    configured: dict[str, str],
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Any:
    from flows.invoice import invoice_flow

    with registered_receiver(stripe_client, monkeypatch, database_url) as receiver:
        tag = uuid.uuid4().hex[:8]
        workdir = tmp_path / "soak"
        workdir.mkdir()
        requests, journal = [], [_entry("phase", name="billing")]
        request_ids, invoice_ids = {}, {}
        # One Stripe 500 before a write, which the flow retries: a fault to count.
        sandbox.configure(faults=[{"method": "POST", "path": "/finalize$", "when": "before_write"}])
        for fate in FATES:
            request = make_request(f"soak-{tag}-{fate}", items=ITEMS)
            assert invoice_flow(request).state is RecoveryPoint.SENT
            [invoice] = invoices_for(stripe_client, request.request_id)
            request_ids[fate], invoice_ids[fate] = request.request_id, invoice.id
            soak_info = {"triggers": ["cli"], "changed_later": fate == "leave", "fate": fate}
            requests.append({**request.model_dump(mode="json"), "_soak": soak_info})

        journal += _take_to_fates(stripe_client, receiver, request_ids, invoice_ids)
        changed = make_request(request_ids["leave"], items=ITEMS[:1])
        with pytest.raises(ledger.RequestConflict):
            invoice_flow(changed)
        journal.append(
            _entry(
                "changed_resubmission",
                request_id=changed.request_id,
                trigger="cli",
                exit_code=3,
                refused=True,
            )
        )
        forged = receiver.post(json.dumps({"id": f"evt_forged_{tag}"}).encode(), "t=1,v1=00")
        journal.append(
            _entry("forged_webhook", event_id=f"evt_forged_{tag}", status=forged.status_code)
        )
        journal.append(_entry("kill", target="worker", pid=12345))
        journal.append(_entry("stop", target="receiver", pid=12346, seconds=2))
        journal.append(_entry("restart", target="worker"))

        _write(workdir / "requests.jsonl", requests)
        _write(workdir / "journal.jsonl", journal)
        soak_json = {
            "seed": 1,
            "requests": len(requests),
            "database_url": database_url,
            "sandbox_url": sandbox.url,
            "api_key_env": KEY_ENV,
            "prefect_database_url": None,
            "started": time.time(),
            "finished": time.time(),
        }
        (workdir / "soak.json").write_text(json.dumps(soak_json))
        yield Soak(
            workdir,
            request_ids,
            invoice_ids,
            sandbox.url,
            database_url,
            stripe_client,
            receiver,
        )


def _take_to_fates(
    client: stripe.StripeClient,
    receiver: Receiver,
    request_ids: dict[str, str],
    invoice_ids: dict[str, str],
) -> list[dict[str, Any]]:
    """Pay, decline and void through the SDK, as the harness does; wait for our ledger."""
    paid = client.v1.invoices.pay(invoice_ids["pay"], {"payment_method": "pm_card_visa"})
    assert paid.status == "paid"
    with pytest.raises(stripe.CardError):
        client.v1.invoices.pay(invoice_ids["decline"], {"payment_method": "pm_card_chargeDeclined"})
    client.v1.invoices.void_invoice(invoice_ids["void"])

    def point(fate: str) -> RecoveryPoint:
        return ledger.require(receiver.engine, request_ids[fate]).point

    wait_for(lambda: point("pay") is RecoveryPoint.PAID, "the payment in our ledger")
    wait_for(lambda: point("void") is RecoveryPoint.VOID, "the void in our ledger")
    wait_for(lambda: inbox_rows(receiver.engine, "invoice.payment_failed"), "the decline")
    return [
        _entry("pay", request_id=request_ids["pay"], invoice_id=invoice_ids["pay"], outcome="paid"),
        _entry(
            "pay",
            request_id=request_ids["decline"],
            invoice_id=invoice_ids["decline"],
            outcome="declined",
        ),
        _entry("void", request_id=request_ids["void"], invoice_id=invoice_ids["void"]),
    ]


@pytest.mark.slow
def test_a_clean_soak_is_ok_and_every_failure_is_named(
    soak: Soak, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = soak.verify()
    assert clean.problems == []
    assert clean.ok
    assert (clean.requests, clean.invoices, clean.duplicates, clean.missing) == (4, 4, 0, 0)
    assert (clean.conflicts_detected, clean.forged_webhooks, clean.kills, clean.stops) == (1,) * 4
    assert clean.faults_by_kind == {"before_write": 1}
    assert clean.faults_injected == 1
    assert clean.line() == (
        "soak OK: 4 requests, 4 invoices, 0 duplicates, 0 missing, 0 wrong, 1 kills, 1 faults"
    )
    assert "| duplicates | 0 |" in clean.table()

    # The same verdict from the command line, the key read from the variable soak.json names.
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    assert main([str(soak.workdir)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == clean.line()

    _files_that_say_something_else(soak, tmp_path)
    _issue_19_kinds_judged(soak, tmp_path)
    _stripe_that_holds_something_else(soak, tmp_path)


def _files_that_say_something_else(soak: Soak, tmp_path: Path) -> None:
    """A request never invoiced, other lines expected, a forged event that got in,
    a changed resubmission that was not refused."""
    ghost = {**_read(soak.workdir / "requests.jsonl")[0], "request_id": "soak-never-billed"}
    missing = soak.verify(soak.variant(tmp_path, lambda requests: requests.append(ghost)))
    assert (missing.missing, missing.ok) == (1, False)
    assert missing.problems == ["soak-never-billed: no invoice in Stripe (our ledger: no row)"]
    assert missing.line().startswith("soak FAILED: 5 requests, 4 invoices, 0 duplicates, 1 missing")

    def more_seats(requests: list[dict[str, Any]]) -> None:
        requests[3]["items"][0]["quantity"] = 4

    wrong = soak.verify(soak.variant(tmp_path, more_seats))
    assert (wrong.wrong_lines, wrong.wrong_totals, wrong.ledger_mismatches) == (1, 1, 1)
    assert not wrong.ok
    leave = soak.request_ids["leave"]
    differs = "line 0: expected (4, 4800), found (3, 3600)"
    assert f"{leave}: {soak.invoice_ids['leave']} lines differ: {differs}" in wrong.problems

    # An event our receiver accepted, as if the harness had forged it.
    [applied] = [e for e in inbox_rows(soak.receiver.engine, "invoice.paid")]
    forged = _entry("forged_webhook", event_id=applied.event_id, status=400)
    accepted = soak.verify(soak.variant(tmp_path, journal=[forged]))
    assert (accepted.bad_signatures_accepted, accepted.ok) == (1, False)

    taken = _entry(
        "changed_resubmission", request_id=leave, trigger="http", http_status=202, refused=False
    )
    missed = soak.verify(soak.variant(tmp_path, journal=[taken]))
    assert (missed.conflicts_missed, missed.conflicts_detected, missed.ok) == (1, 1, False)


def _issue_19_kinds_judged(soak: Soak, tmp_path: Path) -> None:
    """Each fault kind of issue 19, as the harness journals it, gone right and gone wrong."""
    [applied] = [e for e in inbox_rows(soak.receiver.engine, "invoice.paid")]
    now = time.time()
    fine = [
        _entry("foreign_webhook", event_id="evt_foreign_never_kept", status=400, how="other_mode"),
        _entry("forged_webhook", event_id="evt_forged_weak", status=400, how="weak_prefix"),
        _entry("weak_secret_config", refused=True, exit_code=1, traceback=False),
        _entry("serve_killed_at_start", request_id="r", flow_run_id="f", state="PENDING"),
        _entry("serve_kill_followup", request_id="r", billed=True, same_run=False),
        _entry("workers_killed_shard_pending", batch="b", workers=["w1"]),
        _entry("batch_end", name="b", exit_code=0, overdue=False, worker_kill=True),
        _entry("batch_end", name="c", exit_code=-9, overdue=True, worker_kill=False),
        {"t": 1.0, "kind": "limiter_store_down", "seconds": 1},
        {"t": 2.0, "kind": "limiter_store_up"},
    ]
    clean = soak.verify(soak.variant(tmp_path, journal=fine))
    assert clean.problems == [] and clean.ok
    assert (clean.foreign_webhooks, clean.serve_kills_at_start, clean.shard_pending_kills) == (
        1,
        1,
        1,
    )
    assert clean.limiter_outages == 1

    wrong = [
        # A foreign event our receiver applied (as the hole did): kept as applied.
        _entry("foreign_webhook", event_id=applied.event_id, status=200, how="other_account"),
        _entry("forged_webhook", event_id="evt_forged_weak2", status=401, how="weak_empty"),
        _entry("weak_secret_config", refused=False, exit_code=-9, weak_signed_status=200),
        _entry("serve_kill_followup", request_id="r", billed=False, same_run=True, seconds=300),
        _entry("batch_end", name="b", exit_code=-9, overdue=True, worker_kill=True),
        # Redis down from the epoch until now: every write the soak's billing made.
        {"t": 1.0, "kind": "limiter_store_down", "seconds": now},
        {"t": now, "kind": "limiter_store_up"},
    ]
    found = soak.verify(soak.variant(tmp_path, journal=wrong))
    assert not found.ok
    assert (
        found.foreign_events_applied,
        found.weak_signatures_not_refused,
        found.weak_secrets_accepted,
        found.triggered_runs_stranded,
        found.billing_runs_hung,
    ) == (1, 1, 1, 1, 1)
    assert found.writes_while_limiter_down >= len(FATES)  # at least each invoice's create
    assert any("answered 401, expected 400" in p for p in found.problems)
    assert any(p.startswith("r: serve killed while its run started") for p in found.problems)
    assert "foreign events applied" in found.line()


def _stripe_that_holds_something_else(soak: Soak, tmp_path: Path) -> None:
    """A second invoice for a request, a second send, a second paid move, a lost payment."""
    client, leave = soak.client, soak.request_ids["leave"]
    customer = client.v1.invoices.retrieve(soak.invoice_ids["leave"]).customer
    assert isinstance(customer, str)
    second = client.v1.invoices.create(
        {
            "customer": customer,
            "collection_method": "send_invoice",
            "days_until_due": 14,
            "metadata": {META_REQUEST_ID: leave},
        }
    )
    duplicated = soak.verify()
    assert (duplicated.invoices, duplicated.duplicates, duplicated.ok) == (5, 1, False)
    assert any(p.startswith(f"{leave}: 2 invoices in Stripe") for p in duplicated.problems)
    client.v1.invoices.delete(second.id)
    assert soak.verify().ok

    client.v1.invoices.send_invoice(soak.invoice_ids["decline"])  # the customer emailed twice
    resent = soak.verify()
    assert (resent.sent_more_than_once, resent.ok) == (1, False)

    # No code path of ours moves a request to paid twice (ledger.settle refuses a
    # paid request), so the second move is written by hand, as a bug would leave it.
    with transaction(soak.receiver.engine) as session:
        session.add(
            AuditEvent(
                request_id=soak.request_ids["pay"],
                from_point="sent",
                to_point="paid",
                message="invoice paid (invoice.paid)",
            )
        )
    twice = soak.verify()
    assert (twice.payments_applied_twice, twice.sent_more_than_once) == (1, 1)

    # The webhook endpoint gone, a card payment never reaches our ledger.
    for endpoint in client.v1.webhook_endpoints.list().data:
        client.v1.webhook_endpoints.delete(endpoint.id)
    client.v1.invoices.pay(soak.invoice_ids["leave"], {"payment_method": "pm_card_visa"})

    def paid_later(requests: list[dict[str, Any]]) -> None:
        requests[3]["_soak"]["fate"] = "pay"

    lost = soak.verify(soak.variant(tmp_path, paid_later))
    assert (lost.payments_lost, lost.wrong_status, lost.ok) == (1, 0, False)
    assert (
        f"{leave}: {soak.invoice_ids['leave']} is paid in Stripe, our ledger says sent"
        in lost.problems
    )


def test_a_workdir_that_cannot_be_judged_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path}/soak.json: cannot read it (No such file or directory); "
        "is this a soak's --workdir?\n"
    )

    soak_json = {"api_key_env": KEY_ENV, "sandbox_url": "http://127.0.0.1:9", "database_url": "x"}
    (tmp_path / "soak.json").write_text(json.dumps(soak_json))
    assert main([str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {KEY_ENV}: not set; export the soak's Stripe key in it\n"
    )

    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    (tmp_path / "requests.jsonl").write_text(
        '{"request_id": "r1", "currency": "usd", "items": [{"unit_price": "1.00"}]}\n'
    )
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {tmp_path}/requests.jsonl entry 1: needs request_id, currency and items of "
        "integer unit_amount and quantity"
    )


def test_fault_kinds_are_toggled_by_name() -> None:
    assert parse_without(None) == frozenset(KINDS)
    assert parse_without("redis_down, foreign_events") == frozenset(KINDS) - {
        "redis_down",
        "foreign_events",
    }
    with pytest.raises(ValueError, match="unknown fault kind redis_gone; the kinds are"):
        parse_without("redis_gone")


def test_limiter_outages_from_the_journal() -> None:
    journal = [
        {"t": 10.0, "kind": "limiter_store_down"},
        {"t": 15.0, "kind": "limiter_store_up"},
        {"t": 20.0, "kind": "kill"},
        {"t": 30.0, "kind": "limiter_store_down"},
    ]
    assert _limiter_down(journal) == [(10.0, 15.0), (30.0, float("inf"))]
