"""One Prefect task per step of the invoice DAG.

Retry layers: inside a task, `invoiceflow.retry` retries transient Stripe
failures within seconds (honouring Retry-After). These task retries are the
outer layer for a longer outage: they rerun the whole step later, which is safe
because every step re-reads its recovery point and reuses its idempotency key.
Permanent failures (card, validation, a mismatched invoice, a lost lease) are
never retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import State, Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun

from invoiceflow import catalog, customers, invoicing
from invoiceflow.attempt import attempt_of
from invoiceflow.db.models import RecoveryPoint
from invoiceflow.retry import is_transient, is_unreachable
from invoiceflow.runtime import get_runtime
from invoiceflow.settings import get_settings

P = ParamSpec("P")
R = TypeVar("R")

# Outer retries: after the in-task retries gave up, wait this long and try the
# step again (INVOICEFLOW_TASK_RETRY_DELAYS_SECONDS; Prefect fixes them when the
# task is defined, so they are read at import).
TASK_RETRY_DELAYS_SECONDS: list[float] = get_settings().task_retry_delays_seconds
TASK_RETRY_JITTER = 0.3
# No Prefect `timeout_seconds`: in a worker thread it cannot interrupt a blocking
# call. A step is bounded instead by the Stripe HTTP timeout
# (INVOICEFLOW_STRIPE_TIMEOUT_SECONDS) times the bounded in-task retries.


def retry_if_transient(_task: Task[Any, Any], _run: TaskRun, state: State[Any]) -> bool:
    # Not an unreachable Stripe: a wrong address or no network is not fixed by
    # waiting minutes; the run ends `temporary` at once, naming the setting.
    error = state.data
    return isinstance(error, BaseException) and is_transient(error) and not is_unreachable(error)


def stripe_step(name: str, run_name: str | None = None) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A Stripe step as a Prefect task, with the retry policy above (dunning's too)."""

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        return task(
            name=name,
            task_run_name=run_name,
            retries=len(TASK_RETRY_DELAYS_SECONDS),
            retry_delay_seconds=TASK_RETRY_DELAYS_SECONDS,
            retry_jitter_factor=TASK_RETRY_JITTER,
            retry_condition_fn=retry_if_transient,
            # Our ledger decides what is done; Prefect's result cache must not.
            cache_policy=NO_CACHE,
            persist_result=False,
        )(fn)

    return decorate


@stripe_step("ensure-product", "ensure-product-{sku}")
def ensure_product(sku: str, name: str, request_id: str) -> str:
    return catalog.ensure_product(get_runtime(), sku, name, request_id)


@stripe_step("ensure-price", "ensure-price-{sku}-{unit_amount}{currency}")
def ensure_price(
    sku: str, currency: str, unit_amount: int, stripe_product_id: str, request_id: str
) -> str:
    return catalog.ensure_price(
        get_runtime(), sku, currency, unit_amount, stripe_product_id, request_id
    )


@stripe_step("ensure-customer")
def ensure_customer(request_id: str, owner: str) -> str:
    return customers.ensure_customer(get_runtime(), request_id, owner)


# The invoice's steps take plain strings (Prefect hashes and stores a task's
# parameters) and work in the attempt `pipeline.bill` keeps live for them
# (`invoiceflow.attempt`).
@stripe_step("catalog-ready")
def mark_catalog_ready(request_id: str, owner: str) -> None:
    invoicing.mark_catalog_ready(get_runtime(), request_id, attempt_of(owner, request_id))


@stripe_step("create-invoice")
def create_invoice(request_id: str, owner: str) -> str:
    return invoicing.create_invoice(get_runtime(), request_id, attempt_of(owner, request_id))


@stripe_step("add-items")
def add_items(request_id: str, owner: str) -> None:
    invoicing.add_items(get_runtime(), request_id, attempt_of(owner, request_id))


@stripe_step("finalize")
def finalize(request_id: str, owner: str) -> None:
    invoicing.finalize(get_runtime(), request_id, attempt_of(owner, request_id))


@stripe_step("send")
def send(request_id: str, owner: str) -> None:
    invoicing.send(get_runtime(), request_id, attempt_of(owner, request_id))


@stripe_step("refresh-settlement")
def refresh_settlement(request_id: str, owner: str) -> str:
    point: RecoveryPoint = invoicing.refresh_settlement(
        get_runtime(), request_id, attempt_of(owner, request_id)
    )
    return point.value


__all__ = [
    "add_items",
    "create_invoice",
    "ensure_customer",
    "ensure_price",
    "ensure_product",
    "finalize",
    "mark_catalog_ready",
    "refresh_settlement",
    "send",
]
