"""Bank debits: an invoice paid by ACH Direct Debit is `processing` before its outcome.

ACH Direct Debit is a delayed-notification payment method: Stripe accepts the payment,
the invoice stays `open` while its PaymentIntent is `processing`, and days later the
bank's answer arrives. The sandbox knows Stripe's documented ACH test payment methods
(`pm_usBankAccount_*`, each naming its outcome) and sends, in this order:

    pay:     payment_intent.processing, invoice.updated (attempted, attempt_count)
    success: payment_intent.succeeded, invoice.paid, invoice.payment_succeeded,
             invoice.updated
    failure: payment_intent.payment_failed (its `last_payment_error` says why),
             invoice.payment_failed, invoice.updated; the invoice stays `open`

When the outcome comes (`SandboxConfig`): an invoice on a test clock settles when the
clock passes `bank_debit_days` after the payment, in time order with the clock's other
events; any other after `bank_debit_settle_ms` of wall time, or, with that knob null,
when `POST /_sandbox/bank_debits/settle` asks. `pm_usBankAccount_processing` never
settles, as in Stripe. While a debit is processing, the invoice cannot be paid again,
voided or revised (its PaymentIntent cannot be canceled while it processes).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from dataclasses import dataclass

from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.context import Call, changed, record_event
from stripe_sandbox.errors import StripeError, invalid
from stripe_sandbox.resources import payments
from stripe_sandbox.store import JSON, Store

SECONDS_PER_DAY = 86_400
METHOD_TYPE = "us_bank_account"
# ACH Direct Debit debits US dollars only.
CURRENCY = "usd"
# Stays processing for ever (Stripe: "useful for testing PaymentIntent cancellation").
STAYS_PROCESSING = "pm_usBankAccount_processing"
# Stripe's ACH test payment methods -> None (the debit succeeds) or how it fails
# (failure code, message): https://docs.stripe.com/payments/ach-direct-debit (testing).
OUTCOMES: dict[str, tuple[str, str] | None] = {
    "pm_usBankAccount_success": None,
    "pm_usBankAccount_accountClosed": (
        "account_closed",
        "The customer's bank account has been closed.",
    ),
    "pm_usBankAccount_noAccount": (
        "no_account",
        "The customer's bank account could not be located.",
    ),
    "pm_usBankAccount_insufficientFunds": (
        "insufficient_funds",
        "The customer's account has insufficient funds to cover this payment.",
    ),
    "pm_usBankAccount_debitNotAuthorized": (
        "debit_not_authorized",
        "The customer has notified their bank that this payment was unauthorized.",
    ),
}


@dataclass(frozen=True)
class BankDebit:
    invoice_id: str
    payment_method: str
    # The test-clock moment it settles at; None when wall time (or a control call) decides.
    settles_at: int | None


def is_bank_debit(payment_method: str | None) -> bool:
    return payment_method in OUTCOMES or payment_method == STAYS_PROCESSING


def check(invoice: JSON, payment_method: str) -> None:
    """Refuse what Stripe refuses before debiting: another currency, a type not allowed."""
    if invoice["currency"] != CURRENCY:
        raise invalid(
            f"The payment method type `{METHOD_TYPE}` only supports `{CURRENCY}`; this "
            f"invoice is in `{invoice['currency']}`.",
            param="payment_method",
        )
    allowed = invoice["payment_settings"]["payment_method_types"]
    if allowed is not None and METHOD_TYPE not in allowed:
        raise invalid(
            f"The payment method type `{METHOD_TYPE}` is not in this invoice's "
            f"`payment_settings[payment_method_types]` ({', '.join(allowed)}).",
            param="payment_method",
        )


def refuse_while_processing(store: Store, invoice: JSON, action: str) -> None:
    """A processing PaymentIntent cannot be canceled, so the invoice stays as it is."""
    if payments.is_processing(store, invoice):
        raise StripeError(
            400,
            "invalid_request_error",
            f"You can't {action} invoice {invoice['id']}: its payment is processing "
            "(a bank debit); wait for invoice.paid or invoice.payment_failed.",
            code="payment_intent_unexpected_state",
        )


def start(call: Call, invoice: JSON, payment_method: str, before: JSON) -> None:
    """The debit is submitted: the PaymentIntent processes, the invoice stays open."""
    store = call.store
    intent = payments.processing(store, invoice, payment_method, METHOD_TYPE)
    invoice["next_payment_attempt"] = None
    _emit(store, "payment_intent.processing", intent, invoice, call)
    call.emit("invoice.updated", invoice, changed(before, invoice))
    clock = invoice["test_clock"]
    settles_at = None
    if clock is not None:
        settles_at = store.clock_time(clock) + call.config.bank_debit_days * SECONDS_PER_DAY
    debit = BankDebit(invoice["id"], payment_method, settles_at)
    store.bank_debits[intent["id"]] = debit
    delay_ms = call.config.bank_debit_settle_ms
    if clock is None and delay_ms is not None and payment_method != STAYS_PROCESSING:
        asyncio.get_running_loop().call_later(
            delay_ms / 1000, _settle_if_still_due, store, call.config, intent["id"], debit
        )


def settle_all(store: Store, config: SandboxConfig, invoice_id: str | None = None) -> list[str]:
    """Settle every processing debit now (of one invoice, if given); their intent ids.

    The control plane's `POST /_sandbox/bank_debits/settle`: the bank answers early.
    """
    due = [
        intent_id
        for intent_id, debit in list(store.bank_debits.items())
        if debit.payment_method != STAYS_PROCESSING
        and (invoice_id is None or debit.invoice_id == invoice_id)
    ]
    for intent_id in due:
        settle(store, config, intent_id)
    return due


def due_on_clock(store: Store, clock_id: str, start: int, end: int) -> Iterator[tuple[int, str]]:
    """(moment, intent id) of the clock's debits settling in (start, end]."""
    for intent_id, debit in store.bank_debits.items():
        invoice = store.invoices.get(debit.invoice_id)
        moment = debit.settles_at
        if invoice is None or invoice["test_clock"] != clock_id or moment is None:
            continue
        if debit.payment_method != STAYS_PROCESSING and start < moment <= end:
            yield moment, intent_id


def settle(store: Store, config: SandboxConfig, intent_id: str) -> None:
    """The bank's answer for one debit: the invoice paid, or its payment failed."""
    debit = store.bank_debits.pop(intent_id, None)
    invoice = store.invoices.get(debit.invoice_id) if debit else None
    if debit is None or invoice is None or not payments.is_processing(store, invoice):
        return
    # Stripe acts on its own here: the events carry no request.
    call = Call(store, {}, None, None, config)
    failure = OUTCOMES[debit.payment_method]
    before = copy.deepcopy(invoice)
    if failure is None:
        payments.settle(store, invoice, succeeded=True, payment_method=debit.payment_method)
        intent = payments.intent_of(store, invoice)
        assert intent is not None
        _emit(store, "payment_intent.succeeded", intent, invoice, None)
        payments.mark_paid(call, invoice, attempted=True, before=before)
        return
    code, message = failure
    error = StripeError(400, "invalid_request_error", message, code=code).summary()
    intent = payments.decline(store, invoice, error, METHOD_TYPE)
    assert intent is not None
    _emit(store, "payment_intent.payment_failed", intent, invoice, None)
    call.emit("invoice.payment_failed", invoice)
    call.emit("invoice.updated", invoice, changed(before, invoice))


def _settle_if_still_due(
    store: Store, config: SandboxConfig, intent_id: str, debit: BankDebit
) -> None:
    if store.bank_debits.get(intent_id) is debit:  # not settled early, nor the data reset
        settle(store, config, intent_id)


def _emit(store: Store, type_: str, intent: JSON, invoice: JSON, call: Call | None) -> None:
    """A PaymentIntent event, on its invoice's time (a PaymentIntent names no test clock)."""
    record_event(
        store,
        type_,
        intent,
        request_id=call.request_id if call else None,
        idempotency_key=call.idempotency_key if call else None,
        created=store.clock_time(invoice["test_clock"]),
    )
