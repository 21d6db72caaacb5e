"""One shard of a billing run: its share of the run's manifest, in chunks.

    the manifest's unfinished entries with position % shards == shard (shard 1 of 3 here)
      ─┬─ bill requests 1-28 (10) ──┐
       ├─ bill requests 31-58 (10) ─┼─ counts
       └─ …                         ┘

The chunks are the billing run's own (`flows.billing_run.bill_entries`): sized
for this shard's share and threads, a table artifact each, a task per request
with INVOICEFLOW_BATCH_CHUNK=1.

Started by the billing run (`flows/billing_run.py`) as a run of the
`billing-shard` deployment on a process work pool, so N workers on N machines
share one run. Its parameters are references only — the run id, the shard's
index and the shard count — and its requests come from the shared ledger,
where the billing run recorded them before starting any shard: the source
file need not exist on this machine.

Rerunning a shard (or the whole billing run) is always safe: finished entries
are skipped, and each request resumes where the ledger says it stands.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.billing_run import bill_entries, thread_pool
from invoiceflow.batch import manifest
from invoiceflow.batch import shards as sharding
from invoiceflow.runtime import get_runtime


def _run_name() -> str:
    parameters = flow_run.parameters
    shard, shards = int(parameters.get("shard", 0)), int(parameters.get("shards", 1))
    return f"billing-shard-{parameters.get('run_id')}-{shard + 1}-of-{shards}"


@flow(
    name="billing-shard",
    flow_run_name=_run_name,
    task_runner=thread_pool(),
    retries=0,
    log_prints=False,
)
def billing_shard_flow(run_id: str, shard: int, shards: int) -> dict[str, int]:
    """Bill shard `shard` (0-based) of `shards` of billing run `run_id`; its counts."""
    logger = get_run_logger()
    rt = get_runtime()
    manifest.check_run_id(run_id)
    sharding.check_shards(shards)
    if not 0 <= shard < shards:
        raise sharding.ShardingError(f"shard must be 0-{shards - 1}, got {shard}")
    entries = sharding.entries(rt.engine, run_id, shard, shards)
    logger.info(
        "Billing run %s, shard %d/%d: %d requests to do", run_id, shard + 1, shards, len(entries)
    )
    bill_entries(run_id, entries)
    return {"billed": len(entries)}
