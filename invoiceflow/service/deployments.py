"""Every deployment `invoiceflow serve` registers, in one list.

`invoice` runs on demand (UI form, POST /invoices); a payment's ending needs
no run (`invoiceflow.endings`, told by serve's sweeper). The billing cycle runs on
cron schedules in one time zone (INVOICEFLOW_SCHEDULE_TIMEZONE): `billing-run`
(invoice every pending request), `dunning` (remind, then write off, overdue
invoices) and `reconcile` (apply what webhooks missed). Each schedule is
configurable, or "off" for a deployment that runs only when triggered.
`billing-shard` runs one shard of a billing run spread over workers
(INVOICEFLOW_BATCH_SHARDS > 1); the billing run starts it, never a schedule.
`deployments/prefect.yaml` mirrors this list for the multi-host
`prefect deploy --all` path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoiceflow.batch.shards import SHARD_DEPLOYMENT

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Schedule

    from invoiceflow.settings import Settings

# "<flow name>/<deployment name>", as `run_deployment` and the CLI address it.
INVOICE_DEPLOYMENT = "invoice/invoice"
BILLING_RUN_DEPLOYMENT = "billing-run/billing-run"
DUNNING_DEPLOYMENT = "dunning/dunning"
RECONCILE_DEPLOYMENT = "reconcile/reconcile"
BILLING_SHARD_DEPLOYMENT = SHARD_DEPLOYMENT


def cycle_schedule(cron: str, settings: Settings, slug: str) -> list[Schedule]:
    """The deployment's one cron schedule in the configured time zone, or none ("off").

    The slug names the schedule, so a restart with another cron replaces it
    instead of adding a second one next to it.
    """
    from prefect.schedules import Cron

    if cron == "off":
        return []
    return [Cron(cron, timezone=settings.schedule_timezone, slug=slug)]


async def build_deployments() -> list[RunnerDeployment]:
    from prefect.types.entrypoint import EntrypointType

    from flows.billing_run import billing_run_flow
    from flows.billing_shard import billing_shard_flow
    from flows.dunning import dunning_flow
    from flows.invoice import invoice_flow
    from flows.reconcile import reconcile_flow
    from invoiceflow.settings import get_settings

    settings = get_settings()
    # A module path, not a file path: served runs load the installed package,
    # whichever directory `invoiceflow serve` was started from.
    module = EntrypointType.MODULE_PATH
    invoice = await invoice_flow.ato_deployment(
        name="invoice",
        description="One billing request → one sent Stripe invoice. Runs on demand.",
        entrypoint_type=module,
    )
    billing_run = await billing_run_flow.ato_deployment(
        name="billing-run",
        description="The billing cycle: invoice every pending request, each on its own.",
        schedules=cycle_schedule(settings.billing_cron, settings, "billing-cycle"),
        # A reference to the requests, never the requests: Prefect caps parameters.
        parameters={"source": settings.billing_source, "hold": settings.billing_hold},
        entrypoint_type=module,
    )
    billing_shard = await billing_shard_flow.ato_deployment(
        name="billing-shard",
        description="One shard of a billing run spread over workers; started by the run.",
        entrypoint_type=module,
    )
    dunning = await dunning_flow.ato_deployment(
        name="dunning",
        description="Overdue invoices: reminders on the cadence, then the write-off.",
        schedules=cycle_schedule(settings.dunning_cron, settings, "dunning"),
        entrypoint_type=module,
    )
    reconcile = await reconcile_flow.ato_deployment(
        name="reconcile",
        description="Apply what webhooks missed, finish stuck requests, report drift.",
        schedules=cycle_schedule(settings.reconcile_cron, settings, "reconcile"),
        entrypoint_type=module,
    )
    return [invoice, billing_run, billing_shard, dunning, reconcile]
