"""A billing run spread over shards: N deployment runs, on N workers, share one manifest.

    parent: open manifest → record every request in the ledger → start N shard runs
            → wait (progress from the manifest) → report, as an unsharded run does
    shard k: the manifest's unfinished entries with position % N == k, one task each

Shards get references only (run id, shard index, shard count): the source file
may not exist on a worker's machine, the shared database does. So the parent
records every valid request of the source in the ledger *before* any shard
starts (intent before Stripe), and a shard reads its requests back from there.
A ledger row's content never changes once stored (`ledger.submit` refuses other
content for the same id), so what a shard bills is exactly what the source said.

Nothing here decides "billed once": the ledger's leases and derived idempotency
keys do, whatever runs twice or dies. A shard that died leaves its entries
without an outcome; the parent reports them unfinished, and a rerun of the
same billing run resumes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from invoiceflow import ledger
from invoiceflow.batch import manifest, unit
from invoiceflow.batch.outcome import Outcome
from invoiceflow.batch.source import Source
from invoiceflow.db.engine import reading
from invoiceflow.db.models import BillingRequestRow, BillingRunItem
from invoiceflow.request import BillingRequest, RequestError, parse_request

# "<flow name>/<deployment name>", as run_deployment addresses it.
SHARD_DEPLOYMENT = "billing-shard/billing-shard"
WORK_POOL = "invoiceflow"
MAX_SHARDS = 64


class ShardingError(Exception):
    """Shards cannot be started (no deployment registered…); one line naming the fix."""


@dataclass(frozen=True)
class ShardEnd:
    """How one shard's flow run ended, as Prefect saw it."""

    shard: int
    flow_run_id: str
    state: str  # Completed, Crashed, Failed, Cancelled…

    @property
    def completed(self) -> bool:
        return self.state == "Completed"


def owns(position: int, shard: int, shards: int) -> bool:
    """Whether entry `position` belongs to shard `shard` of `shards` (round robin)."""
    return position % shards == shard


def record_intents(engine: Engine, run_id: str, source: Source, todo: Sequence[int]) -> int:
    """Store every request a shard will bill in the ledger, before any shard starts.

    An entry that cannot be stored (its request id is already used for other
    content, …) is finished here with its outcome, exactly as a unit would
    have finished it, so no shard ever picks it up. Returns how many entries
    are left for the shards.
    """
    left = 0
    for position in todo:
        request = source.entries[position].request
        if request is None:  # broken in the source: finished as invalid already
            continue
        try:
            ledger.submit(engine, request)
        except Exception as exc:  # conflict, or the database: the entry's outcome says which
            failed = unit.failed(exc)
            manifest.record(engine, run_id, position, failed.outcome, failed.reason)
            continue
        left += 1
    return left


def entries(
    engine: Engine, run_id: str, shard: int, shards: int
) -> list[tuple[int, BillingRequest]]:
    """The shard's unfinished entries, each with its request as the ledger stores it.

    An entry whose request is not in the ledger (it cannot be, after
    `record_intents`; a database restored from an older backup could) is
    finished as `unexpected` with the fix, rather than guessed at.
    """
    todo = [p for p in manifest.unfinished(engine, run_id) if owns(p, shard, shards)]
    if not todo:
        return []
    with reading(engine) as session:
        rows = session.exec(
            select(BillingRunItem.position, BillingRequestRow.payload)
            .join(
                BillingRequestRow,
                col(BillingRequestRow.request_id) == col(BillingRunItem.request_id),
                isouter=True,
            )
            .where(BillingRunItem.run_id == run_id)
            .where(col(BillingRunItem.position).in_(todo))
            .order_by(col(BillingRunItem.position))
        ).all()
    found: list[tuple[int, BillingRequest]] = []
    for position, payload in rows:
        try:
            if payload is None:
                raise LookupError("its request is not recorded in the ledger")
            found.append((position, parse_request(payload)))
        except (LookupError, RequestError) as exc:
            reason = f"{exc}; rerun the billing run from its source to record it again"
            manifest.record(engine, run_id, position, Outcome.UNEXPECTED, reason)
    return found


def check_shards(shards: int) -> int:
    if not 1 <= shards <= MAX_SHARDS:
        raise ShardingError(
            f"--shards / INVOICEFLOW_BATCH_SHARDS must be 1-{MAX_SHARDS}, got {shards} "
            "(1 = bill in this process)"
        )
    return shards


def not_registered(api_url: str | None) -> ShardingError:
    where = f"the Prefect server at {api_url}" if api_url else "Prefect's temporary local server"
    return ShardingError(
        f"deployment {SHARD_DEPLOYMENT!r} is not registered on {where}; register it with "
        "`prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml` (work pool "
        f"{WORK_POOL!r}, then `prefect worker start --pool {WORK_POOL}` on each machine) or "
        "`invoiceflow serve`, set PREFECT_API_URL to that server, or bill with --shards 1"
    )
