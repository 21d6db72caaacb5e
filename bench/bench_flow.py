"""The invoice flow end to end against the Stripe sandbox: seconds and Stripe calls.

Runs the real DAG (`flows.invoice.invoice_flow`) on a real Prefect server and a real
database, with the sandbox in this process answering every call after a Stripe-like
delay, and prints the figures and a markdown table for the README:

1. first run of N requests (3-5 lines each, a few shared customers and SKUs), one after
   another: seconds and Stripe reads/writes per request;
2. the same N requests again, already sent: seconds and Stripe writes (must be 0);
3. one request with 250 lines (Stripe's per-invoice maximum): seconds, add_lines calls;
4. K requests at once from K threads, each for a new customer and 5 new SKUs, against
   Stripe's test-mode rate limit (25 req/s): total seconds, 429s answered (and retried),
   requests sent.

Two times per run: wall, what the caller waits, and the flow run's own time as Prefect
records it (Running to Completed). They differ by Prefect's engine overhead, mostly its
teardown: Prefect 3.9 joins a heartbeat thread that sleeps in 1 s steps, so a sync flow
run returns at the next whole second after it started.

Each run stops after `send` (the flow never waits for a payment): waiting for one is not
the pipeline's time. Prefect's own server is started unless PREFECT_API_URL is set; the
database is a temporary SQLite file unless --database-url names a PostgreSQL server, in
which case a database of its own is created there and dropped afterwards. Retries use the
production settings.

    python bench/bench_flow.py [--requests 20] [--latency-ms 60] [--jitter-ms 40]
        [--concurrency 8] [--database-url postgresql+psycopg://root@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Prefect reads these when it is first imported (below, inside main).
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from stack import CUSTOMERS, KEY, SKUS, WRITE_METHODS, database, say

MAX_LINES = 250


@dataclass
class Sample:
    wall: float
    flow: float
    reads: int
    writes: int
    rate_limited: int
    add_lines: int
    sent: bool


# Prefect's server answers 503 when its SQLite database is locked by a concurrent write;
# the client then backs off (2 s, 4 s, ...). Counted from its access log.
SERVER_503 = 'HTTP/1.1" 503'
SERVER_LOG: list[Path] = []  # the access log of the server this script started


def prefect_503s() -> int | None:
    if not SERVER_LOG:
        return None
    with SERVER_LOG[0].open(encoding="utf-8", errors="replace") as log:
        return sum(SERVER_503 in line for line in log)


@contextmanager
def prefect_server() -> Iterator[str]:
    """A throwaway Prefect server, as the tests use, unless PREFECT_API_URL is set."""
    if os.environ.get("PREFECT_API_URL"):
        yield f"{os.environ['PREFECT_API_URL']} (from PREFECT_API_URL)"
        return
    from invoiceflow_testing.local_prefect import local_prefect_server

    # INFO: the server's access log, for counting its 503s.
    extra = {"PREFECT_SERVER_LOGGING_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    with local_prefect_server(**extra) as server:
        SERVER_LOG.append(server.log_path)
        yield f"{server.api_url} (started in {server.started_in_seconds:.0f} s)"


def request_data(request_id: str, customer: tuple[str, str], items: list[dict[str, Any]]) -> Any:
    customer_id, name = customer
    return {
        "request_id": request_id,
        "customer": {"id": customer_id, "email": f"billing@{customer_id}.example", "name": name},
        "currency": "usd",
        "days_until_due": 30,
        "description": "Monthly services",
        "metadata": {"po": f"PO-{request_id}"},
        "items": items,
    }


def item(sku: tuple[str, str, int], quantity: int, description: str | None = None) -> Any:
    data = {"sku": sku[0], "name": sku[1], "unit_amount": sku[2], "quantity": quantity}
    if description:
        data["description"] = description
    return data


def small_requests(rng: random.Random, prefix: str, count: int) -> list[Any]:
    """`count` requests of 3-5 lines over the shared customers and SKUs."""
    from invoiceflow.request import parse_request

    requests = []
    for n in range(count):
        skus = rng.sample(SKUS, rng.randint(3, 5))
        items = [item(sku, rng.randint(1, 40)) for sku in skus]
        requests.append(
            parse_request(request_data(f"{prefix}-{n:03d}", rng.choice(CUSTOMERS), items))
        )
    return requests


def new_catalog_requests(rng: random.Random, prefix: str, count: int) -> list[Any]:
    """`count` requests of 5 lines, each for a new customer and 5 new SKUs: the most Stripe
    calls at once (the customer and the 5 product/price branches run in parallel)."""
    from invoiceflow.request import parse_request

    requests = []
    for n in range(count):
        customer = (f"{prefix}-customer-{n}", f"New Customer {n}")
        items = [
            item((f"{prefix}-{n}-sku-{m}", f"New product {n}.{m}", rng.randint(100, 9_999)), 1)
            for m in range(5)
        ]
        requests.append(parse_request(request_data(f"{prefix}-{n:03d}", customer, items)))
    return requests


def big_request(rng: random.Random, request_id: str) -> Any:
    """250 usage lines over the shared SKUs, e.g. one per site and service."""
    from invoiceflow.request import parse_request

    items = [
        item(SKUS[n % len(SKUS)], rng.randint(1, 3), f"Site {n // len(SKUS) + 1:02d}")
        for n in range(MAX_LINES)
    ]
    return parse_request(request_data(request_id, CUSTOMERS[0], items))


def count_calls(entries: list[dict[str, Any]]) -> tuple[int, int, int, int]:
    """(reads, writes, 429s, add_lines calls) in a slice of the sandbox's request log."""
    reads = writes = limited = add_lines = 0
    for entry in entries:
        if entry["status"] == 429:
            limited += 1
            continue
        if entry["method"] in WRITE_METHODS:
            writes += 1
            add_lines += entry["path"].endswith("/add_lines")
        else:
            reads += 1
    return reads, writes, limited, add_lines


def run_flow(request: Any) -> tuple[float, float, bool]:
    """(wall seconds, flow-run seconds, reached `sent`) for one run of the invoice flow.

    Wall time is what a caller waits. The flow run's own time (Prefect's Running to
    Completed) leaves out the engine's teardown, where Prefect 3.9 joins its heartbeat
    thread: that thread sleeps in whole seconds, so a sync flow run returns only at the
    next full second after it started.
    """
    from prefect import get_client

    from flows.invoice import invoice_flow
    from invoiceflow.db.models import RecoveryPoint

    started = time.perf_counter()
    state = invoice_flow(request, return_state=True)
    wall = time.perf_counter() - started
    try:
        sent = state.result().state is RecoveryPoint.SENT
    except Exception as exc:
        say(f"   {request.request_id}: {type(exc).__name__}: {exc}")
        sent = False
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    return wall, run.total_run_time.total_seconds(), sent


def run_alone(sandbox: Any, request: Any) -> Sample:
    """Run one request with nothing else going on: its Stripe calls are the log's new entries."""
    before = len(sandbox.requests())
    wall, flow_seconds, sent = run_flow(request)
    return Sample(wall, flow_seconds, *count_calls(sandbox.requests()[before:]), sent=sent)


def check_sent(samples: list[Sample], what: str) -> None:
    failed = sum(not s.sent for s in samples)
    if failed:
        raise SystemExit(f"{what}: {failed} of {len(samples)} requests did not reach `sent`")


def p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def times(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} / {p95(values):.2f}"


def mean(values: list[int]) -> float:
    return sum(values) / len(values)


def first_run(sandbox: Any, requests: list[Any]) -> list[Sample]:
    lines = [len(r.items) for r in requests]
    customers = len({r.customer.id for r in requests})
    skus = len({i.sku for r in requests for i in r.items})
    say(
        f"\n1. first run: {len(requests)} requests of {min(lines)}-{max(lines)} lines "
        f"({sum(lines)} in all; {customers} customers, {skus} SKUs), one after another"
    )
    samples = [run_alone(sandbox, request) for request in requests]
    check_sent(samples, "first run")
    wall = [s.wall for s in samples]
    say(f"   wall seconds per request, median / p95: {times(wall)} (max {max(wall):.2f})")
    say(f"   flow-run seconds per request, median / p95: {times([s.flow for s in samples])}")
    for what in ("reads", "writes"):
        counts = [getattr(s, what) for s in samples]
        say(
            f"   Stripe {what} per request: {mean(counts):.1f} mean, "
            f"{statistics.median(counts):g} median, {min(counts)}-{max(counts)} range"
        )
    say(f"   429s: {sum(s.rate_limited for s in samples)}")
    return samples


def rerun(sandbox: Any, requests: list[Any]) -> list[Sample]:
    say(f"\n2. rerun of the same {len(requests)} finished requests")
    samples = [run_alone(sandbox, request) for request in requests]
    check_sent(samples, "rerun")
    writes = sum(s.writes for s in samples)
    say(f"   wall seconds per request, median / p95: {times([s.wall for s in samples])}")
    say(f"   flow-run seconds per request, median / p95: {times([s.flow for s in samples])}")
    say(f"   Stripe reads per request: {mean([s.reads for s in samples]):.1f}")
    say(f"   Stripe writes, all reruns together: {writes}" + ("" if writes == 0 else "  <- BUG"))
    return samples


def big_one(sandbox: Any, rng: random.Random) -> Sample:
    say(f"\n3. one request with {MAX_LINES} lines over the same {len(SKUS)} SKUs")
    sample = run_alone(sandbox, big_request(rng, "bench-250-lines"))
    check_sent([sample], "250-line request")
    say(
        f"   wall {sample.wall:.2f} s, flow run {sample.flow:.2f} s; "
        f"{sample.add_lines} add_lines calls; {sample.reads} reads, {sample.writes} writes"
    )
    return sample


@dataclass
class Concurrent:
    count: int
    rate: float
    wall: float
    flow_median: float
    answered: int
    rate_limited: int
    sent: int
    invoices: int
    prefect_503s: int | None


def at_once(sandbox: Any, requests: list[Any]) -> Concurrent:
    k = len(requests)
    # Each 429 retried is a warning from invoiceflow.retry; the sandbox log counts them.
    logging.getLogger("invoiceflow.retry").setLevel(logging.ERROR)
    sandbox.configure(rate_limit="test")
    rate = float(sandbox.config()["rate_limit"])
    say(
        f"\n4. {k} requests at once from {k} threads, each for a new customer and 5 new SKUs, "
        f"rate limit {rate:.0f} req/s"
    )
    before = len(sandbox.requests())
    server_503s = prefect_503s()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=k) as pool:
        results = list(pool.map(run_flow, requests))
    wall = time.perf_counter() - started
    sandbox.configure(rate_limit=None)
    entries = sandbox.requests()[before:]
    reads, writes, limited, _ = count_calls(entries)
    invoices = sum(
        1
        for e in entries
        if (e["method"], e["path"], e["status"]) == ("POST", "/v1/invoices", 200)
        and not e["replayed"]
    )
    result = Concurrent(
        count=k,
        rate=rate,
        wall=wall,
        flow_median=statistics.median(flow for _, flow, _ in results),
        answered=reads + writes,
        rate_limited=limited,
        sent=sum(sent for _, _, sent in results),
        invoices=invoices,
        prefect_503s=None if server_503s is None else (prefect_503s() or 0) - server_503s,
    )
    say(
        f"   {wall:.2f} s wall for all {k}; flow run median {result.flow_median:.2f} s "
        f"(max {max(flow for _, flow, _ in results):.2f})"
    )
    say(
        f"   Stripe: {result.answered} calls answered ({result.answered / wall:.1f}/s), "
        f"{limited} answered 429 and retried (their warnings not shown)"
    )
    say(f"   sent: {result.sent}/{k}; invoices created: {invoices}")
    if result.prefect_503s is not None:
        say(f"   Prefect server 503s (its SQLite locked; client backs off): {result.prefect_503s}")
    return result


def markdown(
    setup: str,
    first: list[Sample],
    again: list[Sample],
    big: Sample,
    together: Concurrent | None,
    lines: str,
) -> None:
    n = len(first)
    say("\nMarkdown for the README:\n")
    say(setup + "\n")
    say("| Scenario | Wall s (median / p95) | Flow run s (median / p95) | Stripe calls |")
    say("|---|---|---|---|")
    say(
        f"| First run, {n} requests of {lines} lines, one at a time "
        f"| {times([s.wall for s in first])} | {times([s.flow for s in first])} "
        f"| {mean([s.reads for s in first]):.1f} reads + "
        f"{mean([s.writes for s in first]):.1f} writes per request |"
    )
    say(
        f"| Rerun of the same {n} finished requests "
        f"| {times([s.wall for s in again])} | {times([s.flow for s in again])} "
        f"| {mean([s.reads for s in again]):.1f} reads + "
        f"**{sum(s.writes for s in again)} writes** in all |"
    )
    say(
        f"| One request with {MAX_LINES} lines | {big.wall:.2f} | {big.flow:.2f} "
        f"| {big.add_lines} add_lines calls; {big.reads} reads + {big.writes} writes |"
    )
    if together is not None:
        t = together
        say(
            f"| {t.count} requests at once (new customer and 5 new SKUs each), "
            f"rate limit {t.rate:.0f} req/s "
            f"| {t.wall:.2f} for all | {t.flow_median:.2f} median "
            f"| {t.answered} answered, {t.rate_limited} x 429 retried; "
            f"{t.sent}/{t.count} sent, {t.invoices} invoices"
            + ("" if t.prefect_503s is None else f"; {t.prefect_503s} x 503 from Prefect")
            + " |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="N for parts 1 and 2")
    parser.add_argument("--latency-ms", type=float, default=60.0, help="sandbox delay per call")
    parser.add_argument("--jitter-ms", type=float, default=40.0, help="plus uniform 0..jitter")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server to use (a database of its own is created and dropped); "
        "default: a temporary SQLite file",
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="K requests at once in part 4 (0: skip)"
    )
    args = parser.parse_args()
    if args.requests < 1:
        parser.error("--requests must be at least 1")

    from invoiceflow.prefect_env import configure_prefect
    from stripe_sandbox import start_sandbox

    configure_prefect()
    rng = random.Random(1)
    with ExitStack() as stack:
        if not os.environ.get("PREFECT_API_URL"):
            say("Starting a Prefect server...")
        prefect_where = stack.enter_context(prefect_server())
        database_url, database_name = stack.enter_context(database(args.database_url))
        sandbox = stack.enter_context(
            start_sandbox(latency_ms=args.latency_ms, jitter_ms=args.jitter_ms, seed=1)
        )
        os.environ.update(
            {
                "STRIPE_API_KEY": KEY,
                "STRIPE_API_BASE": sandbox.url,
                "INVOICEFLOW_DATABASE_URL": database_url,
            }
        )
        from invoiceflow.runtime import get_runtime, reset_runtime

        reset_runtime()
        get_runtime()  # migrate the schema before anything is timed
        import prefect

        delay = f"{args.latency_ms:g} ms + 0-{args.jitter_ms:g} ms jitter per Stripe call"
        cpus = len(os.sched_getaffinity(0))
        say(f"Prefect {prefect.__version__} server: {prefect_where}")
        say(f"Database: {database_name}")
        say(f"Stripe sandbox in this process: {sandbox.url}, {delay}")
        say(f"{cpus} CPUs; every run ends after `send` (no waiting for payment)")
        say("Wall: what the caller waits. Flow run: Prefect's Running -> Completed, without")
        say("the engine's teardown (Prefect 3.9 joins a heartbeat thread that sleeps in 1 s steps)")

        # The first flow run of a process pays Prefect's one-time setup; not counted.
        warmup = run_alone(sandbox, warmup_request())
        check_sent([warmup], "warm-up")
        say(f"\nwarm-up run (own customer and SKU, not counted): {warmup.wall:.2f} s wall")

        requests = small_requests(rng, "bench", args.requests)
        first = first_run(sandbox, requests)
        again = rerun(sandbox, requests)
        big = big_one(sandbox, rng)
        together = None
        if args.concurrency > 0:
            together = at_once(sandbox, new_catalog_requests(rng, "at-once", args.concurrency))

        lines = [len(r.items) for r in requests]
        setup = (
            f"Stripe sandbox with {delay}, no rate limit except in the last row; "
            f"{database_name.split(' (')[0]}; Prefect {prefect.__version__} server; "
            f"{cpus} CPUs; every run ends after `send`."
        )
        markdown(setup, first, again, big, together, f"{min(lines)}-{max(lines)}")
        if SERVER_LOG:
            say(f"\nPrefect server 503s in the whole run: {prefect_503s()}")


def warmup_request() -> Any:
    from invoiceflow.request import parse_request

    data = request_data(
        "bench-warmup", ("warmup", "Warm-up Ltd"), [item(("warmup", "Warm-up", 100), 1)]
    )
    return parse_request(data)


if __name__ == "__main__":
    main()
