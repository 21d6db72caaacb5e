"""What one warm invoice costs the ledger in round trips, counted (issue 23.3).

One request of a customer and prices already mapped (a billing run's steady
state), billed through the plain pipeline (`bill_plain`: submit, then
`pipeline.bill` in sequence), on SQLite and PostgreSQL. SQLAlchemy's events count
every statement, connection checkout and commit; every read that stays is listed
below with why exactly-once needs it. Counts, not timings: a new read fails here
until it says why it must be.

Was (before issue 23.3): 72 statements, 20 checkouts, 9 commits, 11 rollbacks,
13 reads of the request row.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import stripe
from sqlalchemy import event
from sqlalchemy.engine import Engine

from invoiceflow.db.models import RecoveryPoint
from invoiceflow.runtime import get_runtime
from tests.helpers import bill_plain, make_request

pytestmark = [pytest.mark.usefixtures("configured"), pytest.mark.backend]

# Every SELECT of a warm invoice, in order: the table it reads, and why it stays.
READS = [
    # The lease: the row locked (FOR UPDATE), its owner and expiry judged under
    # the lock, the attempt counted in the same commit. The only read of the row
    # that is not also a commit's: every later step starts from the row its
    # step before committed (`Attempt.last_commit`).
    "billing_request",
    # Is the customer mapped with the request's email and name? Then it needs
    # nothing from Stripe (`customers.known`).
    "stripe_customer",
    # Is every price mapped? Then the catalog needs nothing from Stripe.
    "stripe_price",
    # catalog_ready's commit: the row locked, the lease checked under the lock
    # (`ledger.locked`; the same in every commit below).
    "billing_request",
    # (The customer map is not read again under its lock: `customers.known`
    # read it moments ago, and a stale id heals at the draft's create;
    # `customers.commit_known` says why.)
    # (The lines are pinned to their prices, as mapped in this commit, by one
    # UPDATE … RETURNING that is no SELECT: `catalog.pin_prices`.)
    # draft_created's commit.
    "billing_request",
    # (add_items puts on the draft the lines catalog_ready's commit returned
    # moments ago in this attempt, `Attempt.take_pinned`: no read.)
    # lines_added's commit. (Stripe's line ids are written by one UPDATE whose
    # row count proves the lines, not read back: `lines._record_line_ids`.)
    "billing_request",
    # finalized's commit.
    "billing_request",
    # sent's commit.
    "billing_request",
]
# The reads above, and: 3 inserts to submit; 6 commits' writes, catalog_ready's
# pinning its lines with 1 UPDATE … RETURNING (was 40: 2 reads and an UPDATE),
# lines_added's line ids in 1 UPDATE (was a read and an UPDATE); add_items's
# lines carried over from catalog_ready (was a read); commit_known's map read
# (was a read).
STATEMENTS = 34
COMMITS = 8  # submit, lease taken, catalog_ready, draft, lines, finalized, sent, lease released
CHECKOUTS = 10  # one per commit, and per read outside one (customer, prices)


@contextmanager
def counted(engine: Engine) -> Iterator[dict[str, Any]]:
    """Every statement (the table each SELECT reads), commit and checkout on `engine`."""
    seen: dict[str, Any] = {"reads": [], "statements": 0, "events": Counter()}

    def on_statement(*args: Any) -> None:
        statement: str = args[2]
        seen["statements"] += 1
        if statement.lstrip().upper().startswith("SELECT"):
            found = re.search(r"\bFROM (\w+)", statement)
            seen["reads"].append(found.group(1) if found else statement)

    def on_commit(_connection: Any) -> None:
        seen["events"]["commit"] += 1

    def on_checkout(*_args: Any) -> None:
        seen["events"]["checkout"] += 1

    listeners = [
        (engine, "before_cursor_execute", on_statement),
        (engine, "commit", on_commit),
        (engine.pool, "checkout", on_checkout),
    ]
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    try:
        yield seen
    finally:
        for target, name, listener in listeners:
            event.remove(target, name, listener)


def test_a_warm_invoice_reads_only_what_exactly_once_needs(
    sandbox: Any, stripe_client: stripe.StripeClient
) -> None:
    bill_plain(make_request("req-warm-up"))  # maps the customer and the prices
    engine = get_runtime().engine

    with counted(engine) as seen:
        status = bill_plain(make_request("req-warm"))

    assert status.state is RecoveryPoint.SENT
    assert seen["reads"] == READS
    assert seen["statements"] == STATEMENTS
    assert seen["events"]["commit"] == COMMITS
    assert seen["events"]["checkout"] == CHECKOUTS


def test_a_proxy_configured_for_stripe_is_still_used(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client reads the proxy variables once instead of per call; one that is
    set still carries every call (here to a closed port: the call cannot connect)."""
    from invoiceflow.runtime import reset_runtime

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    reset_runtime()
    with pytest.raises(stripe.APIConnectionError):
        get_runtime().stripe.v1.customers.list({"limit": 1})
    monkeypatch.delenv("HTTP_PROXY")
    reset_runtime()
    assert get_runtime().stripe.v1.customers.list({"limit": 1}) is not None
