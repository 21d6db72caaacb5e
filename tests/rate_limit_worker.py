"""One sharer of the Stripe rate limit: threads making real SDK calls through
`call_with_retries`, configured from the environment like any invoiceflow process.

    python tests/rate_limit_worker.py --threads 8 --seconds 10   (or --calls 40)

Prints `ready` once imported and connected, waits for a line on stdin (so
several processes start together), then runs and prints one JSON line:
`starts` (epoch seconds each call began, i.e. when the limiter let it go),
`reserve_ms` (round trips to the limiter's store), `calls`, `failed`.
Used by tests/test_rate_limit.py and bench/bench_rate_limit.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invoiceflow.ratelimit import Limiter, limiter
from invoiceflow.retry import call_with_retries
from invoiceflow.runtime import get_runtime


def _timed_store(gate: Any, reserve_ms: list[float]) -> None:
    """Measure each store round trip (the limiter's own cost, without its wait)."""
    if not isinstance(gate, Limiter):
        return
    reserve = gate.store.reserve

    def timed(budget: Any) -> float:
        began = time.perf_counter()
        try:
            return reserve(budget)
        finally:
            reserve_ms.append((time.perf_counter() - began) * 1000)

    gate.store.reserve = timed  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=0, help="calls per thread")
    parser.add_argument("--seconds", type=float, default=0.0, help="or: run this long")
    args = parser.parse_args()

    rt = get_runtime()
    gate = limiter()
    reserve_ms: list[float] = []
    _timed_store(gate, reserve_ms)
    starts: list[float] = []
    failed: list[str] = []

    def call() -> Any:
        starts.append(time.time())
        return rt.stripe.v1.products.list({"limit": 1})

    def work(deadline: float) -> None:
        done = 0
        while (args.calls and done < args.calls) or (not args.calls and time.time() < deadline):
            try:
                call_with_retries(call, "list products")
            except Exception as exc:  # counted, not fatal: the sandbox log tells the story
                failed.append(type(exc).__name__)
            done += 1

    print("ready", flush=True)
    sys.stdin.readline()
    deadline = time.time() + args.seconds
    threads = [threading.Thread(target=work, args=(deadline,)) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"starts": starts, "reserve_ms": reserve_ms, "failed": failed}), flush=True)


if __name__ == "__main__":
    main()
