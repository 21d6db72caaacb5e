"""Every deployment `invoiceflow serve` registers, in one list.

`invoice` runs on demand (UI form, POST /invoices); `settle` runs once per
applied payment event (started by the sweeper). Scheduled billing runs
(issue 8) are added here too; `deployments/prefect.yaml` mirrors this list for
the multi-host `prefect deploy --all` path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

# "<flow name>/<deployment name>", as `run_deployment` and the CLI address it.
INVOICE_DEPLOYMENT = "invoice/invoice"
SETTLE_DEPLOYMENT = "settle/settle"


async def build_deployments() -> list[RunnerDeployment]:
    from prefect.types.entrypoint import EntrypointType

    from flows.invoice import invoice_flow
    from flows.settle import settle_flow

    invoice = await invoice_flow.ato_deployment(
        name="invoice",
        description="One billing request → one sent Stripe invoice. Runs on demand.",
        # A module path, not a file path: served runs load the installed package,
        # whichever directory `invoiceflow serve` was started from.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    settle = await settle_flow.ato_deployment(
        name="settle",
        description="The end of a request's story, after Stripe's payment event. "
        "Started by the webhook sweeper, once per event.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return [invoice, settle]
