"""The settle sweeper: a `settle` run for every applied payment event, exactly once.

The receiver records an event in our inbox before it answers Stripe, so an
event is never lost, even while Prefect is down. The sweeper turns each inbox
row that still needs its run (`inbox.pending_settles`) into a `settle`
deployment run: created with the event id as Prefect's idempotency key (a
retry after a crash gets the same run, never a second), and only then claimed
(`inbox.mark_settle_started`). While Prefect is unreachable it says so and
tries again next round; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.engine import Engine

from invoiceflow import ledger
from invoiceflow.service.deployments import SETTLE_DEPLOYMENT
from invoiceflow.webhooks import inbox

logger = logging.getLogger("invoiceflow.service.sweeper")

SWEEP_SECONDS = 2.0


async def sweep_once(engine: Engine) -> int:
    """Start the missing settle runs; how many were started."""
    from prefect.deployments import arun_deployment

    started = 0
    for event in await asyncio.to_thread(inbox.pending_settles, engine):
        tags = ["trigger:webhook", f"event:{event.type}"]
        if event.request_id is not None:
            row = await asyncio.to_thread(ledger.load, engine, event.request_id)
            if row is not None:
                tags += [f"customer:{row.customer_key}", f"currency:{row.currency}"]
        await arun_deployment(
            name=SETTLE_DEPLOYMENT,
            parameters={"event_id": event.event_id},
            timeout=0,  # start it; the runner executes it
            idempotency_key=f"settle:{event.event_id}",
            tags=tags,
        )
        if await asyncio.to_thread(inbox.mark_settle_started, engine, event.event_id):
            started += 1
    return started


async def sweep_forever(engine: Engine, every: float = SWEEP_SECONDS) -> None:
    """Sweep until cancelled; an unreachable Prefect only delays the runs."""
    failing = False
    while True:
        try:
            await sweep_once(engine)
            if failing:
                logger.warning("settle sweeper: Prefect answers again; caught up")
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:  # one line per outage, not one per round
                logger.warning("settle sweeper: %s; the events wait in the inbox", exc)
            failing = True
        await asyncio.sleep(every)
