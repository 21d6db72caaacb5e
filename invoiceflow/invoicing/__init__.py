"""The invoice's own steps: create the draft, add the lines, finalize, send, await payment.

Each step is an atomic phase in the rocket-rides sense:
1. read the recovery point and return at once if the step is already done;
2. record the write intent (its idempotency key, derived from the request id
   and the step) before calling Stripe;
3. if an earlier attempt recorded the same intent, it may have reached Stripe
   without our database hearing back — reconcile by *reading* Stripe first.
   Before the first attempt too, unless the object provably cannot exist yet
   (`invoiceflow.fresh`): Stripe is the source of truth, and our database may
   be new, restored or another machine's;
4. write to Stripe under the key, with retries of transient failures only;
5. in one transaction: store the Stripe id/state, close the intent, advance the
   recovery point, append to the audit log.

One module per step, in the order they run: `draft` (the catalog join and the
draft invoice), `lines`, `finalize`, `send`, `settle`; `common` holds their
keys and errors. Each step takes the `Attempt` it runs in
(`invoiceflow.attempt`): what this attempt did itself is the only proof that
lets a step skip a read or an intent insert, and the signature says so.
"""

from invoiceflow.invoicing.common import (
    DraftGone,
    InvoiceMismatch,
    SendUnverifiable,
    retrieve_invoice,
)
from invoiceflow.invoicing.draft import create_invoice, mark_catalog_ready
from invoiceflow.invoicing.finalize import finalize
from invoiceflow.invoicing.lines import LINES_PER_ADD_CALL, add_items, line_text
from invoiceflow.invoicing.send import send, times_emailed
from invoiceflow.invoicing.settle import record_settlement, refresh_settlement

__all__ = [
    "LINES_PER_ADD_CALL",
    "DraftGone",
    "InvoiceMismatch",
    "SendUnverifiable",
    "add_items",
    "create_invoice",
    "finalize",
    "line_text",
    "mark_catalog_ready",
    "record_settlement",
    "refresh_settlement",
    "retrieve_invoice",
    "send",
    "times_emailed",
]
