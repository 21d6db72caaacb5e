"""The chaos soak's verdict: what Stripe and our ledger hold, against what the soak asked for.

Stripe is the truth, so it is read first and through the SDK only: every invoice
(grouped by the request id we stamp in its metadata), every line of each, every
`invoice.sent` event, each invoice's payments. Our ledger is then held to it,
read-only: the invoice it recorded must be Stripe's one invoice, and its paid
or void state must be Stripe's. The harness's work directory says what was
asked: `requests.jsonl` (the original content and the fate of each request),
`journal.jsonl` (kills, stops, forged webhooks, changed resubmissions), and the
sandbox's request log says which faults it injected.

Nothing here imports how invoiceflow builds an invoice (the expected lines are
integer `unit_amount` times `quantity` straight from the request file): a verifier
that reused the code under test would share its bugs.

    python -m bench.soak.verify WORKDIR    # judge a finished soak again (reads soak.json)
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import stripe
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from invoiceflow import progress
from invoiceflow.db.engine import make_engine, reading
from invoiceflow.db.models import AuditEvent, BillingRequestRow, RecoveryPoint, RequestLine
from invoiceflow.stripe_keys import META_LINE, META_REQUEST_ID, metadata_of
from invoiceflow.stripe_paging import PROGRESS_EVERY_SECONDS, every
from invoiceflow.webhooks.inbox import InboxEvent

# Where each fate must leave the Stripe invoice (see the soak's contract in the README).
FATE_STATUS = {"pay": "paid", "decline": "open", "void": "void", "leave": "open"}
# Where our ledger must stand for each Stripe status, once the soak's last reconcile ran.
LEDGER_POINT = {
    "open": RecoveryPoint.SENT.value,
    "paid": RecoveryPoint.PAID.value,
    "void": RecoveryPoint.VOID.value,
    "uncollectible": RecoveryPoint.UNCOLLECTIBLE.value,
}
# The sandbox's request log keeps this many entries (stripe_sandbox/app.py).
SANDBOX_LOG_LIMIT = 100_000
# A problem line names a few differing lines, not all 250.
SHOWN_LINE_DIFFS = 3

# Any of these above zero fails the soak.
FAILURES = (
    "duplicates",
    "missing",
    "wrong_lines",
    "wrong_totals",
    "sent_more_than_once",
    "payments_lost",
    "payments_applied_twice",
    "bad_signatures_accepted",
    "conflicts_missed",
    "wrong_status",
    "ledger_mismatches",
    "unknown_invoices",
    # Issue 19's kinds (bench/soak/kinds.py); zero when a kind was left out.
    "foreign_events_applied",
    "weak_signatures_not_refused",
    "weak_secrets_accepted",
    "triggered_runs_stranded",
    "billing_runs_hung",
    "writes_while_limiter_down",
)
# A Stripe write that took its slot just before the limiter's store went down may
# arrive this long after (seconds); later ones went out without a slot.
LIMITER_DOWN_GRACE_SECONDS = 2.0

# What the one-line verdict sums up as "wrong".
WRONG = ("wrong_lines", "wrong_totals", "wrong_status", "ledger_mismatches")


class SoakFilesError(ValueError):
    """The work directory cannot be judged (a file missing or malformed): one line says why."""


@dataclass
class Verdict:
    """Counts per soak; `problems` has one readable line per thing found wrong."""

    requests: int = 0
    invoices: int = 0
    duplicates: int = 0  # invoices beyond the first for one request
    missing: int = 0  # requests without a sent invoice
    wrong_lines: int = 0  # requests whose Stripe lines differ from the request
    wrong_totals: int = 0  # requests whose Stripe total or currency differs
    sent_more_than_once: int = 0
    payments_lost: int = 0  # Stripe paid, our ledger not (or the harness paid, Stripe not)
    payments_applied_twice: int = 0  # two paid moves in our ledger, or Stripe paid beyond total
    forged_webhooks: int = 0  # sent by the harness with a bad signature
    bad_signatures_accepted: int = 0  # forged webhooks answered 2xx or kept in our inbox
    conflicts_detected: int = 0  # changed resubmissions refused
    conflicts_missed: int = 0  # changed resubmissions NOT refused
    wrong_status: int = 0  # the Stripe invoice is not where the request's fate leaves it
    ledger_mismatches: int = 0  # our ledger differs from Stripe (invoice, state) or the request
    unknown_invoices: int = 0  # invoices carrying a request id the soak never generated
    foreign_webhooks: int = 0  # signed correctly, but another account's, mode's or invoice's
    foreign_events_applied: int = 0  # ... and kept as anything but `ignored`
    weak_signatures_not_refused: int = 0  # signed with a weak secret, answered other than 400
    weak_secrets_accepted: int = 0  # serve started with a weak secret in its list
    serve_kills_at_start: int = 0  # serve SIGKILLed while starting an HTTP-triggered run
    triggered_runs_stranded: int = 0  # ... and its request not billed after the duplicate POST
    shard_pending_kills: int = 0  # every worker SIGKILLed with a billing-shard run Pending
    billing_runs_hung: int = 0  # a billing run hit by that kill which never ended by itself
    limiter_outages: int = 0  # the rate limiter's Redis taken down for a while
    writes_while_limiter_down: int = 0  # pipeline writes Stripe got while it was down
    kills: int = 0
    stops: int = 0
    faults_injected: int = 0  # sandbox faults, Stripe's own rate limit not included
    rate_limited: int = 0  # 429 answers, scripted or Stripe's limit
    faults_by_kind: dict[str, int] = field(default_factory=dict)
    sandbox_log_full: bool = False  # the sandbox forgot older entries: fault counts are a floor
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(getattr(self, name) for name in FAILURES)

    def add(self, count: str, request_id: str, what: str) -> None:
        setattr(self, count, getattr(self, count) + 1)
        self.problems.append(f"{request_id}: {what}")

    def table(self) -> str:
        """The counts as a Markdown table, for the README."""
        rows = ["| check | count |", "| --- | ---: |"]
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, int) and not isinstance(value, bool):
                mark = " ✗" if item.name in FAILURES and value else ""
                rows.append(f"| {item.name.replace('_', ' ')} | {value:,}{mark} |")
        floor = " (at least: the sandbox's log was full)" if self.sandbox_log_full else ""
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(self.faults_by_kind.items()))
        rows.append(f"| faults by kind{floor} | {kinds or 'none'} |")
        return "\n".join(rows)

    def line(self) -> str:
        """The one-line verdict, the harness's last line of output."""
        wrong = sum(getattr(self, name) for name in WRONG)
        said = (
            f"{self.requests} requests, {self.invoices} invoices, {self.duplicates} duplicates, "
            f"{self.missing} missing, {wrong} wrong, {self.kills} kills, "
            f"{self.faults_injected} faults"
        )
        if self.ok:
            return f"soak OK: {said}"
        said_already = ("duplicates", "missing", *WRONG)
        others = [
            f"{getattr(self, name)} {name.replace('_', ' ')}"
            for name in FAILURES
            if name not in said_already and getattr(self, name)
        ]
        return f"soak FAILED: {said}" + (f"; {', '.join(others)}" if others else "")


@dataclass(frozen=True)
class Expected:
    """One request as the harness first submitted it: position → (quantity, amount)."""

    request_id: str
    currency: str
    lines: dict[int, tuple[int, int]]
    unit_amounts: dict[int, int]
    fate: str

    @property
    def total(self) -> int:
        return sum(amount for _quantity, amount in self.lines.values())


def verify(
    workdir: Path, stripe: stripe.StripeClient, sandbox_url: str, database_url: str
) -> Verdict:
    """Judge the soak in `workdir` from Stripe (through `stripe`), the sandbox's log and
    our ledger at `database_url`. Raises SoakFilesError when the files cannot be read."""
    expected = _expected(workdir / "requests.jsonl")
    journal = _read_jsonl(workdir / "journal.jsonl", required=False)
    verdict = Verdict(requests=len(expected))
    # First: the sandbox's faults hit our own reads below too, and those are not the soak's.
    _count_faults(verdict, sandbox_url, _limiter_down(journal))
    invoices = _invoices_by_request(stripe)
    sent = Counter(
        event.data.object["id"]
        for event in every(stripe.v1.events.list, {"type": "invoice.sent"}, "list invoice.sent")
    )
    ledger = _Ledger.read(database_url, _forged_ids(journal) | _foreign_ids(journal))
    paid_by_card = {
        str(e.get("request_id"))
        for e in journal
        if e.get("kind") == "pay" and e.get("outcome") == "paid"
    }

    for request_id in sorted(set(invoices) - set(expected)):
        ids = ", ".join(invoice.id for invoice in invoices[request_id])
        verdict.add("unknown_invoices", request_id, f"not a soak request, yet Stripe has {ids}")
    said = progress.Throttle(every=PROGRESS_EVERY_SECONDS)
    for done, want in enumerate(expected.values()):
        if said.due():
            progress.note("verify: judged %d of %d requests", done, len(expected))
        found = invoices.get(want.request_id, [])
        verdict.invoices += len(found)
        paid = want.request_id in paid_by_card
        _judge_request(verdict, stripe, want, found, sent, ledger, paid)
    _judge_journal(verdict, journal, ledger)
    return verdict


# --- what was asked ------------------------------------------------------------------


def _read_jsonl(path: Path, *, required: bool = True) -> list[dict[str, Any]]:
    if not path.exists():
        if required:
            raise SoakFilesError(f"{path}: missing; is this a soak's --workdir?")
        return []
    documents = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SoakFilesError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(document, dict):
            raise SoakFilesError(f"{path}:{number}: not a JSON object")
        documents.append(document)
    return documents


def _expected(path: Path) -> dict[str, Expected]:
    """Each request's original content; integer amounts only, as the soak writes them."""
    found: dict[str, Expected] = {}
    for number, doc in enumerate(_read_jsonl(path), start=1):
        try:
            items = doc["items"]
            unit_amounts = {i: int(item["unit_amount"]) for i, item in enumerate(items)}
            quantities = {i: int(item.get("quantity", 1)) for i, item in enumerate(items)}
            lines = {i: (quantities[i], unit_amounts[i] * quantities[i]) for i in unit_amounts}
            want = Expected(
                request_id=str(doc["request_id"]),
                currency=str(doc["currency"]).lower(),
                lines=lines,
                unit_amounts=unit_amounts,
                fate=str(doc.get("_soak", {}).get("fate", "leave")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SoakFilesError(
                f"{path} entry {number}: needs request_id, currency and items of integer "
                f"unit_amount and quantity ({type(exc).__name__}: {exc})"
            ) from None
        if want.fate not in FATE_STATUS:
            raise SoakFilesError(f"{path} entry {number}: _soak.fate {want.fate!r} is unknown")
        if want.request_id in found:
            raise SoakFilesError(f"{path} entry {number}: request_id {want.request_id} repeated")
        found[want.request_id] = want
    return found


def _forged_ids(journal: Iterable[Mapping[str, Any]]) -> set[str]:
    return {str(e.get("event_id")) for e in journal if e.get("kind") == "forged_webhook"}


def _foreign_ids(journal: Iterable[Mapping[str, Any]]) -> set[str]:
    return {str(e.get("event_id")) for e in journal if e.get("kind") == "foreign_webhook"}


def _limiter_down(journal: Iterable[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """The spans (epoch seconds) the limiter's store was down, from the journal; one
    still down at the end lasts for ever."""
    spans: list[tuple[float, float]] = []
    down: float | None = None
    for entry in journal:
        if entry.get("kind") == "limiter_store_down":
            down = float(entry.get("t", 0))
        elif entry.get("kind") == "limiter_store_up" and down is not None:
            spans.append((down, float(entry.get("t", 0))))
            down = None
    if down is not None:
        spans.append((down, float("inf")))
    return spans


# --- what Stripe holds ---------------------------------------------------------------


def _invoices_by_request(client: stripe.StripeClient) -> dict[str, list[stripe.Invoice]]:
    """Every invoice carrying one of our request ids (void and paid ones too), oldest first."""
    found: dict[str, list[stripe.Invoice]] = defaultdict(list)
    listed = every(client.v1.invoices.list, {"expand": ["data.payments"]}, "list every invoice")
    for invoice in listed:
        request_id = metadata_of(invoice).get(META_REQUEST_ID)
        if request_id is not None:
            found[request_id].insert(0, invoice)  # Stripe lists newest first
    return found


def _stripe_lines(client: stripe.StripeClient, invoice_id: str) -> list[stripe.InvoiceLineItem]:
    lines = partial(client.v1.invoices.line_items.list, invoice_id)
    return list(every(lines, {}, f"list lines of {invoice_id}"))


def _paid_payments(invoice: stripe.Invoice) -> int:
    """Its payments that succeeded (listed with `expand[]=data.payments`); Stripe makes one."""
    payments = invoice.payments.data if invoice.payments else []
    return sum(1 for payment in payments if payment.status == "paid")


# --- what our ledger holds -----------------------------------------------------------


@dataclass
class _Ledger:
    rows: dict[str, BillingRequestRow]
    lines: dict[str, dict[int, RequestLine]]
    paid_moves: Counter[str]
    # forged or foreign event id → what the inbox says we did with it
    forged_in_inbox: dict[str, str]

    @classmethod
    def read(cls, database_url: str, forged: set[str]) -> _Ledger:
        """One read-only pass; an engine of our own, never migrating anything."""
        engine = make_engine(database_url)
        try:
            with reading(engine) as session:
                rows = {r.request_id: r for r in session.exec(select(BillingRequestRow))}
                lines: dict[str, dict[int, RequestLine]] = defaultdict(dict)
                for line in session.exec(select(RequestLine)):
                    lines[line.request_id][line.position] = line
                moves = session.exec(
                    select(AuditEvent.request_id).where(
                        AuditEvent.to_point == RecoveryPoint.PAID.value
                    )
                )
                inbox = session.exec(
                    select(InboxEvent).where(col(InboxEvent.event_id).in_(sorted(forged)))
                )
                return cls(
                    rows=rows,
                    lines=lines,
                    paid_moves=Counter(moves),
                    forged_in_inbox={event.event_id: event.outcome for event in inbox},
                )
        finally:
            engine.dispose()


# --- judging --------------------------------------------------------------------------


def _judge_request(
    verdict: Verdict,
    client: stripe.StripeClient,
    want: Expected,
    found: list[stripe.Invoice],
    sent: Counter[str],
    ledger: _Ledger,
    paid_by_card: bool,
) -> None:
    """`paid_by_card`: the harness's journal says a card payment of it succeeded."""
    rid = want.request_id
    row = ledger.rows.get(rid)
    if not found:
        verdict.add("missing", rid, f"no invoice in Stripe (our ledger: {_point_of(row)})")
        return
    if len(found) > 1:
        ids = ", ".join(f"{i.id} ({i.status})" for i in found)
        verdict.duplicates += len(found) - 1
        verdict.problems.append(f"{rid}: {len(found)} invoices in Stripe, expected 1: {ids}")
    # Judge the one our ledger recorded; without it, the first Stripe made.
    invoice = next((i for i in found if row and i.id == row.stripe_invoice_id), found[0])
    _judge_content(verdict, client, want, invoice)
    _judge_status(verdict, want, invoice, sent[invoice.id], paid_by_card)
    _judge_ledger(verdict, want, invoice, row, ledger)


def _judge_content(
    verdict: Verdict, client: stripe.StripeClient, want: Expected, invoice: stripe.Invoice
) -> None:
    rid = want.request_id
    have: dict[int, tuple[int, int]] = {}
    strays = []
    for line in _stripe_lines(client, invoice.id):
        position = metadata_of(line).get(META_LINE)
        if position is None or not position.isdigit() or int(position) in have:
            strays.append(line.id)
            continue
        have[int(position)] = (line.quantity or 0, line.amount)
    diffs = _line_diffs(want.lines, have)
    if strays:
        diffs.insert(0, f"lines invoiceflow did not add: {', '.join(strays)}")
    if diffs:
        verdict.add("wrong_lines", rid, f"{invoice.id} lines differ: {'; '.join(diffs)}")
    if invoice.total != want.total or invoice.currency != want.currency:
        verdict.add(
            "wrong_totals",
            rid,
            f"{invoice.id} total {invoice.total} {invoice.currency}, "
            f"expected {want.total} {want.currency}",
        )


def _line_diffs(want: dict[int, tuple[int, int]], have: dict[int, tuple[int, int]]) -> list[str]:
    """Position by position, (quantity, amount) expected vs found; the first few only."""
    diffs = [
        f"line {p}: expected {want.get(p, 'none')}, found {have.get(p, 'none')}"
        for p in sorted(set(want) | set(have))
        if want.get(p) != have.get(p)
    ]
    if len(diffs) > SHOWN_LINE_DIFFS:
        diffs = [*diffs[:SHOWN_LINE_DIFFS], f"and {len(diffs) - SHOWN_LINE_DIFFS} more"]
    return diffs


def _judge_status(
    verdict: Verdict, want: Expected, invoice: stripe.Invoice, sends: int, paid_by_card: bool
) -> None:
    rid = want.request_id
    if sends == 0:
        verdict.add("missing", rid, f"{invoice.id} is {invoice.status} and was never sent")
    elif sends > 1:
        verdict.add("sent_more_than_once", rid, f"{invoice.id} sent {sends} times, expected 1")
    if (invoice.amount_paid or 0) > (invoice.total or 0) or _paid_payments(invoice) > 1:
        verdict.add(
            "payments_applied_twice",
            rid,
            f"{invoice.id}: Stripe shows {_paid_payments(invoice)} paid payments, "
            f"amount_paid {invoice.amount_paid} of total {invoice.total}",
        )
    expected = FATE_STATUS[want.fate]
    if paid_by_card and invoice.status != "paid":
        verdict.add(
            "payments_lost", rid, f"paid by card in the soak, yet {invoice.id} is {invoice.status}"
        )
    elif invoice.status != expected and sends > 0:
        verdict.add(
            "wrong_status",
            rid,
            f"fate {want.fate}: {invoice.id} is {invoice.status}, expected {expected}",
        )


def _judge_ledger(
    verdict: Verdict,
    want: Expected,
    invoice: stripe.Invoice,
    row: BillingRequestRow | None,
    ledger: _Ledger,
) -> None:
    rid = want.request_id
    if row is None:
        verdict.add("ledger_mismatches", rid, f"Stripe has {invoice.id}; our ledger has no row")
        return
    if row.stripe_invoice_id != invoice.id:
        verdict.add(
            "ledger_mismatches",
            rid,
            f"our ledger records invoice {row.stripe_invoice_id}, Stripe's is {invoice.id}",
        )
    status = str(invoice.status)
    if status == "paid" and row.recovery_point != RecoveryPoint.PAID.value:
        verdict.add(
            "payments_lost", rid, f"{invoice.id} is paid in Stripe, our ledger says {row.point}"
        )
    elif status in LEDGER_POINT and row.recovery_point != LEDGER_POINT[status]:
        verdict.add(
            "ledger_mismatches",
            rid,
            f"{invoice.id} is {status} in Stripe, our ledger says {row.recovery_point} "
            f"(expected {LEDGER_POINT[status]})",
        )
    elif status == "paid" and row.amount_paid != invoice.amount_paid:
        verdict.add(
            "ledger_mismatches",
            rid,
            f"{invoice.id}: Stripe amount_paid {invoice.amount_paid}, ours {row.amount_paid}",
        )
    if ledger.paid_moves[rid] > 1:
        verdict.add(
            "payments_applied_twice",
            rid,
            f"our ledger moved it to paid {ledger.paid_moves[rid]} times, expected once",
        )
    ours = {p: (line.quantity, line.unit_amount) for p, line in ledger.lines.get(rid, {}).items()}
    asked = {p: (quantity, want.unit_amounts[p]) for p, (quantity, _) in want.lines.items()}
    if ours != asked or row.currency != want.currency:
        diffs = _line_diffs(asked, ours)
        verdict.add(
            "ledger_mismatches",
            rid,
            f"our ledger holds other content than first submitted ({row.currency}): "
            + "; ".join(diffs or ["currency"]),
        )


def _point_of(row: BillingRequestRow | None) -> str:
    if row is None:
        return "no row"
    return row.recovery_point + (f", {row.last_error}" if row.last_error else "")


def _judge_journal(verdict: Verdict, journal: list[dict[str, Any]], ledger: _Ledger) -> None:
    kinds = Counter(str(entry.get("kind")) for entry in journal)
    verdict.kills, verdict.stops = kinds["kill"], kinds["stop"]
    verdict.serve_kills_at_start = kinds["serve_killed_at_start"]
    verdict.shard_pending_kills = kinds["workers_killed_shard_pending"]
    verdict.limiter_outages = kinds["limiter_store_down"]
    for entry in journal:
        kind = entry.get("kind")
        if kind == "forged_webhook":
            _judge_forged(verdict, entry, ledger)
        elif kind == "foreign_webhook":
            _judge_foreign(verdict, entry, ledger)
        elif kind == "weak_secret_config" and not (
            entry.get("refused") is True and entry.get("traceback") is False
        ):
            verdict.add(
                "weak_secrets_accepted",
                "STRIPE_WEBHOOK_SECRET",
                "serve given a weak secret (whsec_) in its list "
                + (
                    f"started and answered {entry.get('weak_signed_status')} to an event"
                    " signed with it"
                    if entry.get("refused") is not True
                    else "refused to start, but with a traceback rather than one line"
                ),
            )
        elif kind == "serve_kill_followup" and entry.get("billed") is not True:
            verdict.add(
                "triggered_runs_stranded",
                str(entry.get("request_id")),
                f"serve killed while its run started; {entry.get('posts', 1)} repeated"
                f" POSTs answered {entry.get('statuses', [entry.get('duplicate_status')])}"
                f" with {'the same' if entry.get('same_run') else 'a new'} run (now"
                f" {entry.get('final_state', 'unknown')}), and the request was not billed"
                f" {entry.get('seconds')} s later ({entry.get('serve_up_seconds', '?')} s"
                " after serve's last start)",
            )
        elif kind == "batch_end" and entry.get("worker_kill") and entry.get("overdue"):
            verdict.add(
                "billing_runs_hung",
                str(entry.get("name")),
                "a billing run in flight when the workers died with a shard Pending never"
                " ended by itself (the soak killed it)",
            )
        elif kind == "changed_resubmission":
            if entry.get("refused") is True:
                verdict.conflicts_detected += 1
            else:
                answer = entry.get("exit_code", entry.get("http_status"))
                verdict.add(
                    "conflicts_missed",
                    str(entry.get("request_id")),
                    f"changed resubmission by {entry.get('trigger')} was not refused "
                    f"(answered {answer}, expected exit 3 / HTTP 409)",
                )


def _judge_forged(verdict: Verdict, entry: Mapping[str, Any], ledger: _Ledger) -> None:
    verdict.forged_webhooks += 1
    event_id, status = str(entry.get("event_id")), entry.get("status")
    kept = ledger.forged_in_inbox.get(event_id)
    if kept is not None or (isinstance(status, int) and 200 <= status < 300):
        verdict.add(
            "bad_signatures_accepted",
            event_id,
            f"forged webhook ({entry.get('how')}) answered {status}; "
            f"our inbox: {kept or 'not kept'}",
        )
    elif str(entry.get("how", "")).startswith("weak_") and status != 400:
        verdict.add(
            "weak_signatures_not_refused",
            event_id,
            f"signed with a weak secret ({entry.get('how')}), answered {status}, expected 400",
        )


def _judge_foreign(verdict: Verdict, entry: Mapping[str, Any], ledger: _Ledger) -> None:
    """A foreign event may be refused or kept, but only ever kept as `ignored`."""
    verdict.foreign_webhooks += 1
    event_id = str(entry.get("event_id"))
    kept = ledger.forged_in_inbox.get(event_id)
    if kept is not None and not kept.startswith("ignored"):
        verdict.add(
            "foreign_events_applied",
            event_id,
            f"{entry.get('how')} event for {entry.get('request_id')} "
            f"({entry.get('invoice_id')}) answered {entry.get('status')}; our inbox: {kept}",
        )


# Stripe writes the harness makes itself (payments, voids, its webhook endpoint).
_HARNESS_WRITES = ("/pay", "/void")


def _count_faults(
    verdict: Verdict, sandbox_url: str, limiter_down: list[tuple[float, float]]
) -> None:
    """Faults by kind from the sandbox's request log (its control plane needs no key),
    and the pipeline's writes that reached Stripe while the limiter's store was down."""
    log = httpx.get(f"{sandbox_url.rstrip('/')}/_sandbox/requests", timeout=120).json()
    kinds = Counter(str(entry["fault"]) for entry in log if entry.get("fault"))
    verdict.faults_by_kind = dict(kinds)
    verdict.faults_injected = sum(n for kind, n in kinds.items() if kind != "rate_limit")
    verdict.rate_limited = sum(1 for entry in log if entry.get("status") == 429)
    verdict.sandbox_log_full = len(log) >= SANDBOX_LOG_LIMIT
    for entry in log:
        path = str(entry.get("path", ""))
        if entry.get("method") != "POST" or path.endswith(_HARNESS_WRITES):
            continue
        if path.startswith("/v1/webhook_endpoints"):
            continue
        at = float(entry.get("time", 0))
        if any(down + LIMITER_DOWN_GRACE_SECONDS < at < up for down, up in limiter_down):
            verdict.add(
                "writes_while_limiter_down",
                path,
                f"POST {path} reached Stripe at {at:.1f} while the limiter's store was down",
            )


# --- judging a finished soak again -----------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.soak.verify WORKDIR`: the table and the verdict; exit 1 unless OK."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.soak.verify WORKDIR", file=sys.stderr)
        return 2
    workdir = Path(args[0])
    progress.print_to_stderr()  # long listings say how far they got
    try:
        key, sandbox_url, database_url = _soak_settings(workdir)
        client = stripe.StripeClient(key, base_addresses={"api": sandbox_url})
        verdict = verify(workdir, client, sandbox_url, database_url)
    except SoakFilesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (httpx.HTTPError, stripe.StripeError, SQLAlchemyError) as exc:
        # The soak's sandbox or ledger is gone (the harness stopped them): say which.
        print(f"error: cannot read the soak's Stripe or ledger: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(verdict.table())
    for problem in verdict.problems:
        print(f"- {problem}")
    print(verdict.line())
    return 0 if verdict.ok else 1


def _soak_settings(workdir: Path) -> tuple[str, str, str]:
    """The API key (from the variable soak.json names), sandbox URL and ledger URL."""
    path = workdir / "soak.json"
    try:
        soak = json.loads(path.read_text())
    except OSError as exc:
        raise SoakFilesError(
            f"{path}: cannot read it ({exc.strerror}); is this a soak's --workdir?"
        ) from None
    except json.JSONDecodeError as exc:
        raise SoakFilesError(f"{path}: not JSON ({exc.msg})") from None
    if not isinstance(soak, dict):
        raise SoakFilesError(f"{path}: not a JSON object")
    found: dict[str, str] = {}
    for name in ("api_key_env", "sandbox_url", "database_url"):
        value = soak.get(name)
        if not isinstance(value, str) or not value:
            raise SoakFilesError(f"{path}: {name} missing; the harness writes it")
        found[name] = value
    key = os.environ.get(found["api_key_env"])
    if not key:
        raise SoakFilesError(f"{found['api_key_env']}: not set; export the soak's Stripe key in it")
    return key, found["sandbox_url"], found["database_url"]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


if __name__ == "__main__":
    sys.exit(main())
