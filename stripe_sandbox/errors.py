"""Stripe-shaped API errors.

Handlers raise `StripeError`; the app turns it into the JSON body and status code Stripe
would send, so the SDK maps it onto the same exception class it raises against Stripe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class StripeError(Exception):
    """An error response: HTTP status plus Stripe's `{"error": {...}}` body."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        headers: dict[str, str] | None = None,
        executed: bool = False,
        payment_intent: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.payment_intent = payment_intent
        self.headers = headers or {}
        # True when the request ran and changed state before failing (a card decline
        # counts the attempt): Stripe saves such results under the idempotency key, while
        # validation errors are not saved so a corrected retry with the same key works.
        self.executed = executed

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        if self.decline_code is not None:
            error["decline_code"] = self.decline_code
        if self.payment_intent is not None:
            error["payment_intent"] = self.payment_intent
        return {"error": error}

    def summary(self) -> dict[str, Any]:
        """The error object without the PaymentIntent (for the intent's last_payment_error)."""
        error: dict[str, Any] = self.body()["error"]
        error.pop("payment_intent", None)
        return error


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(400, "invalid_request_error", message, code=code, param=param)


def unknown_parameter(param: str) -> StripeError:
    return invalid(f"Received unknown parameter: {param}", param=param, code="parameter_unknown")


def missing_parameter(param: str) -> StripeError:
    return invalid(f"Missing required param: {param}.", param=param, code="parameter_missing")


def no_such(kind: str, object_id: str, *, param: str = "id") -> StripeError:
    """404 for an id that does not exist; `kind` is Stripe's wording ("customer", "price")."""
    return StripeError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def not_editable(message: str) -> StripeError:
    """A change to an invoice (or its items) that is no longer a draft.

    Stripe reserves `invoice_not_editable` for exactly this; other illegal transitions
    (paying a paid invoice, voiding a draft) are plain invalid requests without a code.
    """
    return invalid(message, code="invoice_not_editable")


def wrong_state(message: str) -> StripeError:
    """An action the object's current status forbids, other than editing (400, no code)."""
    return invalid(message)


def exclusive(names: Sequence[str], *, param: str | None = None) -> StripeError:
    return invalid(
        f"You may only specify one of these parameters: {', '.join(names)}.",
        param=param,
        code="parameters_exclusive",
    )


def unrecognized_url(method: str, path: str) -> StripeError:
    return StripeError(
        404,
        "invalid_request_error",
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
        "or we can help at https://support.stripe.com/.",
    )


def authentication(message: str) -> StripeError:
    return StripeError(401, "invalid_request_error", message)


def api_error() -> StripeError:
    # Stripe asks clients not to retry a 500 whose write may have landed: the idempotency
    # layer would replay it anyway. Scripted "before write" faults override this to "true".
    return StripeError(
        500,
        "api_error",
        "An unknown error occurred while processing your request. "
        "Please try again, or contact us at https://support.stripe.com/.",
    )


def rate_limited() -> StripeError:
    return StripeError(
        429,
        "invalid_request_error",
        "Request rate limit exceeded. Too many requests hit the API too quickly. "
        "Learn more about rate limits at https://stripe.com/docs/rate-limits.",
        code="rate_limit",
        headers={"Stripe-Should-Retry": "true"},
    )


def idempotency_in_flight() -> StripeError:
    return StripeError(
        409,
        "idempotency_error",
        "There is currently another in-progress request using this Stripe-Idempotency-Key "
        "(or one of its associated keys). Please try again later.",
        code="idempotency_key_in_use",
        headers={"Stripe-Should-Retry": "true"},
    )


def idempotency_mismatch(key: str) -> StripeError:
    return StripeError(
        400,
        "idempotency_error",
        "Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        "different request.",
    )


def card_declined(decline_code: str, message: str) -> StripeError:
    return StripeError(
        402,
        "card_error",
        message,
        code="card_declined",
        decline_code=decline_code,
        executed=True,
    )
