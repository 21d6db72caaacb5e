"""Issue 19's input holes, each as it was reproduced, in process.

- a CSV given twice (a file appended to itself, two exports concatenated) must
  never become one request with every line twice;
- reconcile must not bill what was only submitted for the next billing run;
- the HTTP trigger (and the webhook receiver) must answer bad bodies with 400,
  never 500, and read a body exactly as the file loader reads a file;
- `submit` records a source all or nothing, even when a conflict or a crash
  comes midway.

The sandbox over HTTP and a real database (SQLite and PostgreSQL where the
ledger decides); the trigger and receiver apps through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy import event
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from invoiceflow import ledger
from invoiceflow.batch.source import read_source
from invoiceflow.batch.submit import SubmitRefused, submit_source
from invoiceflow.cli import app as cli_app
from invoiceflow.db.engine import get_engine, make_engine
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.reconcile.sweep import reconcile
from invoiceflow.request import BillingRequest, RequestError, load_request
from invoiceflow.runtime import get_runtime
from invoiceflow.service.trigger import create_trigger_app
from invoiceflow.settings import load_settings
from invoiceflow.webhooks.app import create_app as create_receiver
from stripe_sandbox.webhooks import sign
from tests.helpers import assert_exactly_one_invoice, bill_plain, invoices_for, make_request

TOKEN = "input-holes-token-0123456789abcdef"
WEBHOOK_SECRET = "whsec_" + "5f1c0a" * 6

CSV_HEADER = (
    "request_id,customer_id,customer_email,customer_name,currency,sku,name,"
    "unit_amount,unit_price,quantity,description,days_until_due"
)
CSV_ROWS = [
    "2026-11-initech,initech,billing@initech.example,Initech,usd,seat,Seat,,12.00,40,,30",
    "2026-11-initech,initech,billing@initech.example,Initech,usd,support,Support,9900,,1,,30",
    "2026-11-umbrella,umbrella,ap@umbrella.example,Umbrella,gbp,seat,Seat,1000,,5,,",
]


def _csv(path: Path, *rows: str) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args))


# --- 1. a CSV given twice ----------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "problems"),
    [
        pytest.param(
            # `cat a.csv a.csv`: the header comes back as a row of its own too.
            [CSV_HEADER, *CSV_ROWS, CSV_HEADER, *CSV_ROWS],
            {
                "2026-11-initech": "line 6: request_id '2026-11-initech' comes back after "
                "other rows (its rows are at lines 2-3, 6-7)",
                "2026-11-umbrella": "line 8: request_id '2026-11-umbrella' comes back after "
                "other rows (its rows are at lines 4, 8)",
            },
            id="appended-to-itself",
        ),
        pytest.param(
            # Two exports of one request's lines, concatenated without the second header.
            [CSV_HEADER, *CSV_ROWS[:2], *CSV_ROWS[:2]],
            {"2026-11-initech": "line 4: repeats line 2 of request '2026-11-initech'"},
            id="rows-repeated",
        ),
        pytest.param(
            # A request's rows must be consecutive, even when none repeats.
            [CSV_HEADER, CSV_ROWS[0], CSV_ROWS[2], CSV_ROWS[1]],
            {
                "2026-11-initech": "line 4: request_id '2026-11-initech' comes back after "
                "other rows (its rows are at lines 2, 4)"
            },
            id="not-consecutive",
        ),
    ],
)
def test_a_csv_given_twice_is_refused_with_its_line_numbers_never_billed_twice(
    configured: dict[str, str], tmp_path: Path, rows: list[str], problems: dict[str, str]
) -> None:
    source = _csv(tmp_path / "november.csv", *rows)

    entries = read_source(str(source)).entries

    refused = {e.request_id: e.problem for e in entries if e.problem and e.request_id in problems}
    assert set(refused) == set(problems), entries
    for request_id, fragment in problems.items():
        assert refused[request_id] is not None and fragment in refused[request_id]
        assert "\n" not in refused[request_id]
    billable = [e.request for e in entries if e.request is not None]
    # Never a request with a line twice, whatever else the file holds.
    assert all(len(r.items) == len({(i.sku, i.unit_amount) for i in r.items}) for r in billable)
    assert not {r.request_id for r in billable} & set(problems)

    submitted = _cli("submit", str(source))

    assert submitted.exit_code == 2, submitted.output
    assert "nothing recorded: " in submitted.output
    assert next(iter(problems.values())) in submitted.output
    assert ledger.list_requests(get_engine(configured["INVOICEFLOW_DATABASE_URL"])) == []


def test_a_csv_whose_requests_are_consecutive_still_reads_as_before(tmp_path: Path) -> None:
    source = _csv(tmp_path / "november.csv", CSV_HEADER, *CSV_ROWS)

    entries = read_source(str(source)).entries

    assert [(e.where, e.problem) for e in entries] == [("line 2", None), ("line 4", None)]
    initech, umbrella = (e.request for e in entries)
    assert initech is not None and initech.total_amount() == 40 * 1200 + 9900
    assert umbrella is not None and umbrella.total_amount() == 5 * 1000


# --- 6. reconcile and what was only submitted ---------------------------------------


def test_reconcile_never_bills_a_request_that_was_only_submitted(
    configured: dict[str, str],
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    database_url: str,
    tmp_path: Path,
) -> None:
    rt = get_runtime()
    waiting = make_request("dec-waiting", customer="waiting")
    crashed = make_request("dec-crashed", customer="crashed")
    month = tmp_path / "december.jsonl"
    month.write_text(json.dumps(waiting.model_dump(mode="json")) + "\n")
    assert submit_source(rt.engine, read_source(str(month))).recorded == 1
    # A run that started its request and stopped on a Stripe outage before send.
    sandbox.configure(
        faults=[{"method": "POST", "path": "/send$", "when": "before_write", "times": 1000}]
    )
    with pytest.raises(stripe.APIError):
        bill_plain(crashed)
    sandbox.configure(faults=[])
    assert ledger.require(rt.engine, "dec-crashed").point is RecoveryPoint.FAILED

    # Hours later (stale_minutes=0: both are old enough), the hourly reconcile runs.
    report = reconcile(rt, since=None, stale_minutes=0, resume=bill_plain)

    assert report.resumed == 1, report.changes
    assert [c.split(":")[0] for c in report.changes] == ["resumed dec-crashed"]
    assert ledger.require(rt.engine, "dec-crashed").point is RecoveryPoint.SENT
    assert_exactly_one_invoice(stripe_client, crashed)
    row = ledger.require(rt.engine, "dec-waiting")
    assert (row.point, row.attempts, row.stripe_invoice_id) == (RecoveryPoint.PLANNED, 0, None)
    assert invoices_for(stripe_client, "dec-waiting") == []
    emails = {customer.email for customer in stripe_client.v1.customers.list().data}
    assert emails == {"billing@crashed.example"}  # no customer made for the waiting one


# --- 10. the trigger's body: 400 with the reason, as the file loader reads it --------


def _deep(levels: int) -> bytes:
    return b'{"metadata": ' + b"[" * levels + b"]" * levels + b"}"


def _body(**changes: Any) -> dict[str, Any]:
    return {**make_request("http-1", customer="http").model_dump(mode="json"), **changes}


DUPLICATE_KEY = (
    json.dumps(_body())
    .replace('"unit_amount": 4825', '"unit_amount": 4825, "unit_amount": 1')
    .encode()
)
BAD_BODIES = [
    pytest.param(b'{"request_id": "http-1", \xff}', "not UTF-8 text (byte 0xff", id="not-utf8"),
    pytest.param(
        json.dumps(_body()).replace('"quantity": 3', '"quantity": ' + "9" * 5000).encode(),
        "the number at items[0].quantity is 5000 characters long",
        id="5000-digits",
    ),
    pytest.param(_deep(100_000), "nested more than 32 levels deep", id="deep-beyond-recursion"),
    pytest.param(_deep(100), "nested more than 32 levels deep in metadata", id="deep"),
    pytest.param(DUPLICATE_KEY, "duplicate key 'unit_amount' in items[1]", id="duplicate-key"),
    pytest.param(b'{"request_id": NaN}', "NaN is not a JSON number", id="nan"),
]


def _post(app: Any, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """One request to the ASGI app in process; an exception in it is the 500 a client gets."""

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.post(path, content=body, headers=headers)

    return asyncio.run(post())


@pytest.mark.parametrize(("body", "reason"), BAD_BODIES)
def test_the_trigger_answers_a_bad_body_400_with_the_file_loaders_reason(
    configured: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    body: bytes,
    reason: str,
) -> None:
    monkeypatch.setenv("INVOICEFLOW_TRIGGER_TOKEN", TOKEN)
    app = create_trigger_app(load_settings())

    response = _post(app, "/invoices", body, {"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert error.startswith("body is not valid JSON: ") and reason in error
    assert ledger.list_requests(get_engine(configured["INVOICEFLOW_DATABASE_URL"])) == []
    # One parser: the same text as a request file, or as a JSONL line, is refused alike.
    (tmp_path / "r.json").write_bytes(body)
    with pytest.raises(RequestError) as refused:
        load_request(tmp_path / "r.json")
    assert reason in str(refused.value) or "not UTF-8" in str(refused.value)
    if b"\n" not in body and b"\xff" not in body:
        (tmp_path / "r.jsonl").write_bytes(body + b"\n")
        [entry] = read_source(str(tmp_path / "r.jsonl")).entries
        assert entry.request is None and entry.problem is not None and reason in entry.problem


# --- the webhook receiver: the same bodies are 400, never 500 ----------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON", id="deep"),
        pytest.param(b'{"id": ' + b"1" * 5000 + b"}", "body is not valid JSON", id="5000-digits"),
        # Refused before JSON: Stripe signs UTF-8 text, so no signature can match.
        pytest.param(
            b'{"id": "evt_1", \xff}', "body is not UTF-8, so not a Stripe event", id="not-utf8"
        ),
    ],
)
def test_the_receiver_answers_a_signed_unreadable_body_400(
    configured: dict[str, str], monkeypatch: pytest.MonkeyPatch, body: bytes, reason: str
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    engine = get_engine(configured["INVOICEFLOW_DATABASE_URL"])
    app = create_receiver(load_settings(), engine)
    signature = sign(body, WEBHOOK_SECRET, int(time.time()))

    response = _post(app, "/webhooks/stripe", body, {"Stripe-Signature": signature})

    assert response.status_code == 400, response.text
    assert response.json() == {"errors": [reason]}


# --- submit: all or nothing, in one transaction -------------------------------------


class _Crash(Exception):
    """The process dying (or the database failing) in the middle of a write."""


@contextmanager
def _before_inserting(engine: Engine, request_id: str, then: Any) -> Iterator[None]:
    """Run `then()` once, just before the billing_request row of `request_id` is inserted."""
    done: list[bool] = []

    def hook(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if done or not statement.startswith("INSERT INTO billing_request "):
            return
        if request_id in repr(parameters):
            done.append(True)
            then()

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", hook)


def _month(tmp_path: Path, *requests: BillingRequest) -> Path:
    path = tmp_path / "month.jsonl"
    path.write_text("".join(json.dumps(r.model_dump(mode="json")) + "\n" for r in requests))
    return path


def _three() -> list[BillingRequest]:
    return [make_request(f"mid-{n}", customer=f"mid{n}") for n in (1, 2, 3)]


@pytest.mark.backend  # one transaction on each backend: what rolls back is the database's
def test_a_crash_midway_through_submit_records_nothing(
    configured: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    engine = get_engine(database_url)
    source = read_source(str(_month(tmp_path, *_three())))

    def crash() -> None:
        raise _Crash("killed while recording mid-2")

    with _before_inserting(engine, "mid-2", crash), pytest.raises(_Crash):
        submit_source(engine, source)

    assert ledger.list_requests(engine) == []
    assert submit_source(engine, source).recorded == 3  # the same file, simply again


@pytest.mark.backend
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_conflict_midway_through_submit_records_nothing(
    configured: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """Another submit records mid-2 with other content while ours is halfway.

    (PostgreSQL only: on SQLite our transaction holds the write lock from its
    first statement, so no other writer can come in between.)
    """
    engine = get_engine(database_url)
    source = read_source(str(_month(tmp_path, *_three())))
    other = make_request("mid-2", customer="someone-else")
    rival = make_engine(database_url)

    try:
        with (
            _before_inserting(engine, "mid-2", lambda: ledger.submit(rival, other)),
            pytest.raises(SubmitRefused) as refused,
        ):
            submit_source(engine, source)
    finally:
        rival.dispose()

    assert refused.value.conflict
    assert refused.value.problems == [
        "mid-2: already recorded with different content; use a new request_id"
    ]
    assert [row.request_id for row in ledger.list_requests(engine)] == ["mid-2"]
    assert ledger.require(engine, "mid-2").fingerprint == other.fingerprint()
