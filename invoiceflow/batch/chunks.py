"""A billing run's entries cut into chunks: the unit of Prefect work.

A chunk is one Prefect task that bills its requests as plain calls, so
Prefect's cost per task (a task run, its state records, an artifact — about
90 ms of the server's CPU, issue 23) is paid once per chunk, not per request.

How big: at most INVOICEFLOW_BATCH_CHUNK requests, and small enough that
every thread gets `CHUNKS_PER_THREAD` of them:

    size = min(INVOICEFLOW_BATCH_CHUNK, ceil(entries / (workers * CHUNKS_PER_THREAD)))

Chunks are billed through the window (`flows.billing_run.in_window`): twice
the pool's threads in flight, and a free thread takes the next chunk as soon as
any chunk ends, so a slow request (a long Stripe retry, a busy lease is only
waited for 2 s) holds up the requests after it in its own chunk, never the
other threads. Two chunks per thread is the least that fills that window from
the start and leaves every thread one more chunk to take when its first one
ends early; the run's tail, a thread idle while the last chunks finish, is at
most one chunk. More chunks per thread would shorten that tail but pay
Prefect's cost per task (about 110 ms of CPU, client and server) again for
each, and where the CPU is the limit (threads outnumber cores) an idle thread
leaves its core to the others anyway. On large runs the cap decides: with 8
workers and chunks of 10, every chunk is full from 160 requests on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

CHUNKS_PER_THREAD = 2


def size(entries: int, workers: int, cap: int) -> int:
    """Requests per chunk for `entries` requests on `workers` threads, at most `cap`."""
    return max(1, min(cap, math.ceil(entries / (workers * CHUNKS_PER_THREAD))))


def split(entries: Sequence[T], chunk: int) -> list[Sequence[T]]:
    """`entries` in order, `chunk` at a time (the last one may be shorter)."""
    return [entries[start : start + chunk] for start in range(0, len(entries), chunk)]


def label(positions: Sequence[int], again: bool = False) -> str:
    """The chunk's task run name, by its entries' 1-based positions in the source:
    `bill requests 1-10`; `bill requests 2-29 (10)` when some between are not in it
    (a shard's share, a resumed run); `… again` for the retry of busy requests."""
    first, last = positions[0] + 1, positions[-1] + 1
    if first == last:
        name = f"bill request {first}"
    else:
        name = f"bill requests {first}-{last}"
        if last - first + 1 != len(positions):
            name += f" ({len(positions)})"
    return f"{name} again" if again else name
