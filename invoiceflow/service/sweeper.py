"""The settle sweeper: each payment event's move told in the Prefect UI, once.

The receiver records an event in our inbox before it answers Stripe, so an
event is never lost, even while Prefect is down. Each round the sweeper takes
the inbox rows still to tell (`inbox.pending_settles`), tells their requests'
endings in one batch through Prefect's API (`endings.tell`: the invoice runs'
state, the story artifact; no flow run, no subprocess), and only then marks
them told (`inbox.mark_told`; both in `endings.tell_inbox`). A crash between
the two tells again, which changes nothing. While Prefect is unreachable it
says so and tries again next round; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.engine import Engine

from invoiceflow import endings
from invoiceflow.webhooks import inbox

logger = logging.getLogger("invoiceflow.service.sweeper")

SWEEP_SECONDS = 2.0
# How long a stop waits for the last round.
LAST_SWEEP_SECONDS = 10.0


def sweep_once(engine: Engine) -> int:
    """Tell the endings of the pending events' requests; how many events were told.

    An event whose request still has an invoice run going stays pending: that
    run may yet end `AwaitingPayment`, and the next round corrects it.
    """
    from prefect.client.orchestration import get_client

    if not inbox.pending_settles(engine, limit=1):
        return 0  # most rounds: no client, no Prefect call
    with get_client(sync_client=True) as client:
        return endings.tell_inbox(client, engine)


async def sweep_forever(engine: Engine, every: float = SWEEP_SECONDS) -> None:
    """Sweep until cancelled; an unreachable Prefect only delays the telling."""
    failing = False
    while True:
        try:
            await asyncio.to_thread(sweep_once, engine)
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


async def last_sweep(engine: Engine, timeout: float = LAST_SWEEP_SECONDS) -> None:
    """At a stop: tell what was received since the last round, so a payment recorded
    just before the stop is not left `AwaitingPayment` until the next start.
    Bounded, and never fails the stop (the events stay in the inbox)."""
    try:
        await asyncio.wait_for(asyncio.to_thread(sweep_once, engine), timeout)
    except Exception as exc:
        logger.warning("settle sweeper: %s at the stop; the events wait in the inbox", exc)
