"""`invoiceflow amend FILE`: a sent invoice revised once, by Stripe revision, as an operator
would do it — and a crash at any of its Stripe writes, then the command again.

Each version of the request is one Stripe invoice: the first as `invoice` sent it, each
next one a revision of the one before (`from_invoice`), holding exactly that version's
lines, finalized and sent once, and the one before voided by Stripe. The invoices are
read back from the sandbox; the chain from `invoiceflow status`.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.amend import versions
from invoiceflow.request import BillingRequest
from invoiceflow.runtime import get_runtime
from invoiceflow.story import versions as versions_story
from tests.crashes import as_a_new_process, crash_during
from tests.helpers import bill_plain, invoices_for, make_request, sent_events
from tests.inprocess_cli import Invoke, configured_cli

# Every Stripe write of an amendment: method, path.
AMEND_WRITES = {
    "revise": ("POST", "^/v1/invoices$"),
    "remove_lines": ("POST", "/remove_lines$"),
    "add_lines": ("POST", "/add_lines$"),
    "finalize": ("POST", "/finalize$"),
    "send": ("POST", "/send$"),
}

CHANGED_ITEMS = [
    {"sku": "consulting-hour", "name": "Consulting hour", "unit_price": "150.00", "quantity": 2},
    {"sku": "amend-review", "name": "Review", "unit_amount": 2500, "quantity": 1},
]


@pytest.fixture
def cli(
    configured: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Invoke:
    return configured_cli(monkeypatch, request, configured)


def _sent(tag: str) -> BillingRequest:
    request = make_request(f"amend-{tag}", customer=f"amend-cust-{tag}")
    bill_plain(request)
    return request


def _changed(request: BillingRequest, **overrides: Any) -> BillingRequest:
    data = request.model_dump(mode="json")
    data.update({"items": CHANGED_ITEMS, **overrides})
    return BillingRequest.model_validate(data)


def _file(tmp_path: Path, request: BillingRequest) -> str:
    path = tmp_path / f"{request.request_id}-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(request.model_dump(mode="json")))
    return str(path)


def _stripe_writes(sandbox: Any, since: int = 0) -> list[str]:
    entries = sandbox.requests()[since:]
    return [f"{e['method']} {e['path']}" for e in entries if e["method"] in ("POST", "DELETE")]


def _executed(sandbox: Any, since: int, method: str, pattern: str) -> int:
    return sum(
        1
        for e in sandbox.requests()[since:]
        if e["method"] == method
        and re.search(pattern, e["path"])
        and not e["replayed"]
        and (e["status"] == 200 or e["fault"] == "after_write")
    )


def _revisions_of(client: stripe.StripeClient, request_id: str, original: str) -> list[Any]:
    return [
        invoice
        for invoice in invoices_for(client, request_id)
        if invoice.from_invoice is not None and invoice.from_invoice.invoice == original
    ]


def _assert_version(
    client: stripe.StripeClient, invoice: stripe.Invoice, request: BillingRequest
) -> None:
    """Exactly the version's lines and total, open, emailed once."""
    lines = list(client.v1.invoices.line_items.list(invoice.id, {"limit": 100}).auto_paging_iter())
    got = sorted(
        (int(line.metadata.to_dict()["invoiceflow_line"]), line.quantity, line.amount)
        for line in lines
    )
    want = [(i, it.quantity, it.unit_amount * it.quantity) for i, it in enumerate(request.items)]
    assert got == want
    assert (invoice.status, invoice.total) == ("open", request.total_amount())
    assert sent_events(client, invoice.id) == 1


@pytest.mark.backend  # the versions table, the row's swap and its audit rows, on both databases
def test_amend_revises_the_sent_invoice_once_and_again_revises_the_latest(
    cli: Invoke, sandbox: Any, stripe_client: stripe.StripeClient, tmp_path: Path
) -> None:
    request = _sent(uuid.uuid4().hex[:8])
    rid = request.request_id
    first = ledger.require(get_runtime().engine, rid)
    v2 = _changed(request)

    amended = cli("amend", _file(tmp_path, v2))

    assert amended.exit_code == 0, (amended.stdout, amended.stderr[-3000:])
    [revision] = _revisions_of(stripe_client, rid, str(first.stripe_invoice_id))
    assert amended.stdout.strip() == (f"{rid}: version 2 sent — {revision.id} {revision.number}")
    assert revision.number == f"{first.invoice_number}-1"
    _assert_version(stripe_client, revision, v2)
    assert stripe_client.v1.invoices.retrieve(str(first.stripe_invoice_id)).status == "void"

    before = len(sandbox.requests())
    again = cli("amend", _file(tmp_path, v2))
    assert again.exit_code == 0, again.stdout
    assert "nothing to amend — the file is version 2 already" in again.stdout
    assert _stripe_writes(sandbox, before) == []

    v3 = _changed(request, description="Services, corrected again")
    third = cli("amend", _file(tmp_path, v3))
    assert third.exit_code == 0, (third.stdout, third.stderr[-3000:])
    [latest] = _revisions_of(stripe_client, rid, revision.id)
    assert latest.number == f"{first.invoice_number}-2"
    assert stripe_client.v1.invoices.retrieve(revision.id).status == "void"
    _assert_version(stripe_client, latest, v3)

    chain = [
        (v.version, v.stripe_invoice_id, v.state) for v in versions.chain(get_runtime().engine, rid)
    ]
    assert chain == [
        (1, first.stripe_invoice_id, "void"),
        (2, revision.id, "void"),
        (3, latest.id, "sent"),
    ]
    status = cli("status", rid)
    assert status.exit_code == 0, status.stdout
    assert f"v1 {first.stripe_invoice_id} {first.invoice_number} void" in status.stdout
    assert f"v3 {latest.id} {latest.number} sent" in status.stdout
    story = versions_story(get_runtime().engine, ledger.require(get_runtime().engine, rid))
    assert f"| 2 | `{revision.id}` | {revision.number} | void |" in story
    assert f"| 3 | `{latest.id}` | {latest.number} | sent |" in story


@pytest.mark.backend
def test_a_paid_invoice_is_not_revised_and_says_so_in_one_line(
    cli: Invoke, sandbox: Any, stripe_client: stripe.StripeClient, tmp_path: Path
) -> None:
    request = _sent(uuid.uuid4().hex[:8])
    invoice_id = str(ledger.require(get_runtime().engine, request.request_id).stripe_invoice_id)
    stripe_client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})  # no webhook heard
    before = len(sandbox.requests())

    refused = cli("amend", _file(tmp_path, _changed(request)))

    assert refused.exit_code == 4
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {request.request_id}: invoice {invoice_id} is paid; a paid or void invoice "
        "cannot be revised — bill the change under a new request_id"
    )
    assert _stripe_writes(sandbox, before) == []
    assert ledger.require(get_runtime().engine, request.request_id).recovery_point == "paid"


def test_a_request_never_sent_is_sent_with_invoice_and_same_content_is_nothing_to_do(
    cli: Invoke, sandbox: Any, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    unsent = make_request(f"amend-unsent-{tag}", customer=f"amend-cust-{tag}")
    ledger.submit(get_runtime().engine, unsent)

    never = cli("amend", _file(tmp_path, _changed(unsent)))
    assert never.exit_code == 2
    assert "invoiceflow invoice FILE" in never.stderr

    unknown = cli("amend", _file(tmp_path, make_request(f"amend-unknown-{tag}")))
    assert unknown.exit_code == 2
    assert "no request" in unknown.stderr

    sent = _sent(f"same-{tag}")
    before = len(sandbox.requests())
    same = cli("amend", _file(tmp_path, sent))
    assert same.exit_code == 0
    assert "nothing to amend — the file is version 1 already" in same.stdout
    assert _stripe_writes(sandbox, before) == []


def _amend_in_thread(request: BillingRequest) -> None:
    """The amendment a crash stops: it ends with the lease lost, as a killed process would."""
    from invoiceflow.amend.revise import amend

    with contextlib.suppress(ledger.LeaseLost):
        amend(get_runtime(), request)


@pytest.mark.parametrize("when", ["stall_before_write", "stall_after_write"])
@pytest.mark.parametrize("step", list(AMEND_WRITES))
def test_a_crash_at_any_write_of_amend_then_amend_again_makes_one_revision_sent_once(
    step: str,
    when: str,
    cli: Invoke,
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    tmp_path: Path,
) -> None:
    request = _sent(uuid.uuid4().hex[:8])
    rid = request.request_id
    original = str(ledger.require(get_runtime().engine, rid).stripe_invoice_id)
    changed = _changed(request)
    method, path = AMEND_WRITES[step]
    since = len(sandbox.requests())

    crash_during(sandbox, rid, method, path, when, lambda: _amend_in_thread(changed))
    as_a_new_process()
    again = cli("amend", _file(tmp_path, changed))

    assert again.exit_code == 0, (again.stdout, again.stderr[-3000:])
    [revision] = _revisions_of(stripe_client, rid, original)
    _assert_version(stripe_client, revision, changed)
    assert stripe_client.v1.invoices.retrieve(original).status == "void"
    for method, pattern in AMEND_WRITES.values():
        assert _executed(sandbox, since, method, pattern) == 1, pattern
    rerun_from = len(sandbox.requests())
    assert cli("amend", _file(tmp_path, changed)).exit_code == 0
    assert _stripe_writes(sandbox, rerun_from) == []


def _post(app: Any, path: str, token: str | None, body: dict[str, Any]) -> Any:
    """One request to the served app, in this process (httpx's ASGI transport)."""
    import asyncio

    import httpx

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, headers=headers, json=body, timeout=120)

    return asyncio.run(call())


@pytest.mark.backend
def test_post_invoices_amend_runs_the_same_amendment_with_the_same_token(
    configured: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    sandbox: Any,
    stripe_client: stripe.StripeClient,
) -> None:
    from invoiceflow.runtime import reset_runtime
    from invoiceflow.service.app import build_app
    from invoiceflow.settings import load_settings

    token = "amend-token-0123456789abcdef"
    monkeypatch.setenv("INVOICEFLOW_TRIGGER_TOKEN", token)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_testAmendInProcess0123456789ab")
    reset_runtime()
    app = build_app(load_settings())
    request = _sent(uuid.uuid4().hex[:8])
    rid = request.request_id
    original = str(ledger.require(get_runtime().engine, rid).stripe_invoice_id)
    changed = _changed(request).model_dump(mode="json")

    assert _post(app, "/invoices/amend", None, changed).status_code == 401
    assert _post(app, "/invoices/amend", "wrong", changed).status_code == 401
    done = _post(app, "/invoices/amend", token, changed)

    assert done.status_code == 200, done.text
    [revision] = _revisions_of(stripe_client, rid, original)
    assert done.json() == {
        "request_id": rid,
        "version": 2,
        "stripe_invoice_id": revision.id,
        "invoice_number": revision.number,
        "state": "sent",
        "changed": True,
    }
    before = len(sandbox.requests())
    again = _post(app, "/invoices/amend", token, changed)
    assert (again.status_code, again.json()["changed"]) == (200, False)
    assert _stripe_writes(sandbox, before) == []

    stripe_client.v1.invoices.void_invoice(revision.id)
    void = _post(
        app,
        "/invoices/amend",
        token,
        _changed(request, description="Third").model_dump(mode="json"),
    )
    assert void.status_code == 409
    assert void.json() == {
        "errors": [
            f"{rid}: invoice {revision.id} is void; a paid or void invoice cannot be revised "
            "— bill the change under a new request_id"
        ]
    }
    unsent = make_request(f"amend-http-unsent-{uuid.uuid4().hex[:6]}")
    ledger.submit(get_runtime().engine, unsent)
    never = _post(app, "/invoices/amend", token, _changed(unsent).model_dump(mode="json"))
    assert never.status_code == 409 and "invoiceflow invoice" in never.json()["errors"][0]


@pytest.mark.usefixtures("prefect_api")  # `invoice` runs a flow: on the session's server
def test_invoice_with_other_content_than_the_latest_version_names_amend(
    cli: Invoke, sandbox: Any, tmp_path: Path
) -> None:
    request = _sent(uuid.uuid4().hex[:8])
    v2 = _changed(request)
    assert cli("amend", _file(tmp_path, v2)).exit_code == 0
    before = len(sandbox.requests())

    latest = cli("invoice", _file(tmp_path, v2), "--no-wait")
    assert latest.exit_code == 0, (latest.stdout, latest.stderr[-3000:])
    other = cli("invoice", _file(tmp_path, _changed(request, description="Third")), "--no-wait")

    assert other.exit_code == 3, (other.stdout, other.stderr[-3000:])
    assert other.stderr.strip().splitlines()[-1] == (
        f"error: request_id {request.request_id!r} was already sent with different content; "
        "to change its invoice run `invoiceflow amend FILE` (a Stripe revision), or use a new "
        "request_id for a new invoice"
    )
    assert _stripe_writes(sandbox, before) == []
