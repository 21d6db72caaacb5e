"""`invoiceflow status` for an operator's billing cycle: filters, due dates, days
overdue and totals per currency, as text and as JSON — over invoices the plain
pipeline (the flow's steps) sent to the sandbox, whose clock runs days behind ours
so some are overdue. The command runs in process, through Typer's CliRunner."""

from __future__ import annotations

import json
from typing import Any

import pytest
import stripe
from typer.testing import CliRunner, Result

from invoiceflow.cli import app
from invoiceflow.db.models import RecoveryPoint
from tests.helpers import bill_plain, make_request

pytestmark = pytest.mark.usefixtures("configured")

DAY = 86_400


def status(*args: str) -> Result:
    """`invoiceflow status …` in this process, configured by the `configured`
    fixture; stdout and stderr apart (Click 8.2+)."""
    return CliRunner().invoke(app, ["status", *args], catch_exceptions=False)


def _cycle(sandbox: Any, stripe_client: stripe.StripeClient) -> None:
    """Four requests: two overdue (billed 'five days ago'), one paid, one due later."""
    sandbox.configure(clock_offset_s=-5 * DAY)
    bill_plain(make_request("late-usd", "acme", days_until_due=2))
    bill_plain(make_request("late-eur", "acme", currency="eur", days_until_due=1))
    paid = bill_plain(make_request("paid-usd", "globex", days_until_due=1))
    sandbox.configure(clock_offset_s=0)
    bill_plain(make_request("due-usd", "globex", days_until_due=30))
    assert paid.stripe_invoice_id is not None
    stripe_client.v1.invoices.pay(paid.stripe_invoice_id, {"paid_out_of_band": True})
    # The receiver is not running here: a rerun reads the settlement from Stripe.
    assert bill_plain(make_request("paid-usd", "globex", days_until_due=1)).state == "paid"


def test_status_filters_shows_overdue_days_and_totals(
    sandbox: Any, stripe_client: stripe.StripeClient, configured: dict[str, str]
) -> None:
    _cycle(sandbox, stripe_client)

    everything = status()
    assert everything.exit_code == 0, everything.stderr
    lines = everything.stdout.splitlines()
    by_id = {line.split(":")[0]: line for line in lines if not line.startswith("total ")}
    assert by_id["late-usd"].endswith("— 3 days overdue")
    assert by_id["late-eur"].endswith("— 4 days overdue")
    assert " — due 20" in by_id["due-usd"]
    assert "overdue" not in by_id["paid-usd"] and "due " not in by_id["paid-usd"]
    totals = [line for line in lines if line.startswith("total ")]
    assert totals == [
        "total EUR: 1 request, billed 568.18 EUR, paid 0.00 EUR, "
        "outstanding 568.18 EUR, overdue 568.18 EUR",
        "total USD: 3 requests, billed 1704.54 USD, paid 568.18 USD, "
        "outstanding 1136.36 USD, overdue 568.18 USD",
    ]

    overdue = status("--overdue", "--json")
    assert overdue.exit_code == 0, overdue.stderr
    rows = json.loads(overdue.stdout)
    assert sorted((r["request_id"], r["days_overdue"]) for r in rows) == [
        ("late-eur", 4),
        ("late-usd", 3),
    ]
    assert all(r["due_date"] and r["customer"] == "acme" for r in rows)

    globex = json.loads(status("--customer", "globex", "--json").stdout)
    assert sorted(r["request_id"] for r in globex) == ["due-usd", "paid-usd"]
    paid = json.loads(status("--state", "paid", "--json").stdout)
    assert [r["request_id"] for r in paid] == ["paid-usd"]
    assert paid[0]["state"] == RecoveryPoint.PAID.value

    sums = json.loads(status("--totals", "--json").stdout)
    assert [(s["currency"], s["requests"], s["overdue"]) for s in sums] == [
        ("eur", 1, 56818),
        ("usd", 3, 56818),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--state", "shipped"], "error: --state must be one of planned, customer_ready"),
        (["--run", "no-such-run"], "error: no billing run 'no-such-run'"),
    ],
)
def test_status_refuses_unknown_filters_in_one_line(
    args: list[str], message: str, configured: dict[str, str]
) -> None:
    result = status(*args)

    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith(message)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_status_with_filters_that_match_nothing(configured: dict[str, str]) -> None:
    result = status("--customer", "nobody")

    assert (result.exit_code, result.stdout) == (0, "no requests match\n")
