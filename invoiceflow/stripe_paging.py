"""Every page of a Stripe list, each page fetched through `call_with_retries`.

The SDK's `auto_paging_iter` fetches pages 2… itself, outside our retry
policy: one 429 on page 40 of a day's events would end the sweep. This walks
the same `starting_after` cursor, one retried call per page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import stripe

from invoiceflow import progress
from invoiceflow.retry import call_with_retries
from invoiceflow.stripe_limits import PAGE_SIZE

PROGRESS_EVERY_SECONDS = 5.0

T = TypeVar("T", bound=stripe.StripeObject)


def every(
    fetch: Callable[[Any], stripe.ListObject[T]], params: dict[str, Any], what: str
) -> Iterator[T]:
    """Each object `fetch(params)` lists, across all pages, in Stripe's order."""
    said = progress.Throttle(every=PROGRESS_EVERY_SECONDS)
    page_params = {**params, "limit": PAGE_SIZE}
    seen = 0
    while True:
        page = call_with_retries(partial(fetch, page_params), what)
        yield from page.data
        seen += len(page.data)
        if not page.has_more or not page.data:
            return
        page_params = {**page_params, "starting_after": page.data[-1]["id"]}
        if said.due():
            progress.note("%s: %d so far", what, seen)
