"""Throughput of a billing run spread over Prefect workers, against Stripe's rate limit.

One command builds the README's scale-out topology on this machine
(`invoiceflow_testing.local_workers`: a Prefect server on PostgreSQL, the `invoiceflow`
process work pool, `billing-shard` deployed, N workers), starts the Stripe
sandbox as a separate process at the given rate limit and latency, and runs
`invoiceflow batch SOURCE --shards N` on R requests of 3 lines each. It prints,
from the sandbox's own request log:

- invoices/s over the billing window (first to last Stripe call) and end to end;
- Stripe calls per invoice, and the bound the rate sets: rate / calls per invoice;
- invoices/s ÷ bound (goal ≥ 0.9);
- 429s as a share of all calls (goal < 1 %), and requests that failed for one (goal 0);
- the machine's load average.

The shared limiter (INVOICEFLOW_RATE_LIMIT_BACKEND=postgres, INVOICEFLOW_STRIPE_RATE)
is switched on in the workers' environment; a build without it ignores the variables.

    python bench/bench_throughput.py [--requests 500] [--workers 2] [--latency-ms 100]
        [--rate 25] [--postgres-url postgresql+psycopg://root@127.0.0.1:5432/test] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from stack import KEY, REPO, database, free_port

LINES = 3
CUSTOMERS = 20
SKUS = [("consulting-hour", "Consulting hour", 15_000), ("travel", "Travel", 4_825)]
SKUS += [("seat-licence", "Seat licence", 999), ("hosting", "Managed hosting", 3_575)]
GOAL_RATIO = 0.9
GOAL_429_SHARE = 0.01


def say(message: str) -> None:
    print(f"… {message}", file=sys.stderr, flush=True)


@contextmanager
def sandbox_process(latency_ms: float, rate: float, log_dir: Path) -> Iterator[str]:
    """`invoiceflow sandbox` in a process of its own (as Stripe is: not our CPU)."""
    port = free_port()
    log = (log_dir / "sandbox.log").open("wb")
    command = [sys.executable, "-m", "invoiceflow", "sandbox", "--port", str(port)]
    command += ["--latency-ms", str(latency_ms), "--rate-limit", str(rate)]
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/_sandbox/config", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the sandbox did not start; see {log.name}") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def write_source(path: Path, prefix: str, count: int) -> Path:
    lines = []
    for n in range(count):
        customer = f"{prefix}-c{n % CUSTOMERS}"
        items = [
            {"sku": sku, "name": name, "unit_amount": amount, "quantity": 1 + (n + m) % 5}
            for m, (sku, name, amount) in enumerate(SKUS[(n + k) % len(SKUS)] for k in range(LINES))
        ]
        lines.append(
            json.dumps(
                {
                    "request_id": f"{prefix}-{n:05d}",
                    "customer": {
                        "id": customer,
                        "email": f"billing@{customer}.example",
                        "name": customer.title(),
                    },
                    "currency": "usd",
                    "items": items,
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def run_batch(source: Path, shards: int, env: dict[str, str]) -> tuple[int, str, float]:
    """`invoiceflow batch SOURCE --shards N`, its progress passed through to stderr."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "invoiceflow", "batch", str(source), "--shards", str(shards)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=None,  # its progress lines, as they come
        text=True,
    )
    stdout, _ = process.communicate()
    return process.returncode, stdout, time.monotonic() - started


def failed_by_429(database_url: str, run_id_prefix: str) -> tuple[int, Counter[str]]:
    """(entries that failed because of a 429, outcomes) from the run's manifest."""
    from sqlmodel import Session, col, select

    from invoiceflow.db.engine import get_engine
    from invoiceflow.db.models import BillingRunItem

    with Session(get_engine(database_url)) as session:
        items = session.exec(
            select(BillingRunItem).where(col(BillingRunItem.run_id).startswith(run_id_prefix))
        ).all()
    outcomes = Counter(str(item.outcome) for item in items)
    by_429 = sum(1 for i in items if i.reason and ("429" in i.reason or "rate" in i.reason.lower()))
    return by_429, outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="workers, and shards")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="sandbox delay per call")
    parser.add_argument("--rate", type=float, default=25.0, help="sandbox rate limit, calls/s")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "INVOICEFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
        ),
        help="PostgreSQL server for the ledger and Prefect (databases of their own, dropped)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny: 12 requests, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.latency_ms = 12, 10.0
    if args.requests < 1 or not 1 <= args.workers <= 64 or args.rate <= 0:
        parser.error("--requests ≥ 1, --workers 1-64 and --rate > 0, please")

    from invoiceflow_testing.local_workers import local_workers

    work = Path(tempfile.mkdtemp(prefix="invoiceflow-bench-throughput-"))
    prefix = f"tp{uuid.uuid4().hex[:6]}"
    source = write_source(work / f"{prefix}.jsonl", prefix, args.requests)
    with ExitStack() as stack:
        say(f"sandbox: rate limit {args.rate:g}/s, latency {args.latency_ms:g} ms")
        sandbox_url = stack.enter_context(sandbox_process(args.latency_ms, args.rate, work))
        database_url, _ = stack.enter_context(database(args.postgres_url))
        app_env = {
            "STRIPE_API_KEY": KEY,
            "STRIPE_API_BASE": sandbox_url,
            "INVOICEFLOW_DATABASE_URL": database_url,
            "INVOICEFLOW_RATE_LIMIT_BACKEND": "postgres",
            "INVOICEFLOW_STRIPE_RATE": f"{args.rate:g}",
        }
        topology = stack.enter_context(
            local_workers(args.workers, app_env, postgres_admin_url=args.postgres_url)
        )
        say(f"billing {args.requests} requests x {LINES} lines in {args.workers} shards")
        env = {**os.environ, **topology.env}
        code, report, wall = run_batch(source, args.workers, env)
        calls = httpx.get(f"{sandbox_url}/_sandbox/requests", timeout=60).json()
        by_429, outcomes = failed_by_429(database_url, source.stem.lower())
        load = os.getloadavg()

    invoiced = outcomes.get("invoiced", 0)
    limited = sum(1 for c in calls if c["status"] == 429)
    accepted = len(calls) - limited
    window = max(c["time"] for c in calls) - min(c["time"] for c in calls) if calls else 0.0
    per_invoice = accepted / invoiced if invoiced else float("nan")
    rate = invoiced / window if window else float("nan")
    bound = args.rate / per_invoice if invoiced else float("nan")
    ratio = rate / bound if invoiced else float("nan")
    share_429 = limited / len(calls) if calls else 0.0
    busiest = max(Counter(int(c["time"]) for c in calls).values()) if calls else 0
    print(report.strip())
    print()
    print(f"requests        {args.requests} x {LINES} lines, {args.workers} workers/shards")
    print(f"sandbox         rate limit {args.rate:g}/s, latency {args.latency_ms:g} ms")
    print(f"outcomes        {dict(outcomes)} (batch exit {code})")
    print(f"invoices/s      {rate:.2f} over the billing window ({window:.1f} s)")
    print(f"end to end      {invoiced / wall:.2f} invoices/s ({wall:.1f} s, CLI start included)")
    print(f"calls/invoice   {per_invoice:.2f} ({accepted} answered; busiest second {busiest})")
    print(f"bound           {bound:.2f} invoices/s (= {args.rate:g} / {per_invoice:.2f})")
    print(f"ratio           {ratio:.2f} of the bound (goal ≥ {GOAL_RATIO})")
    print(f"429s            {share_429:.1%} of {len(calls)} calls (goal < {GOAL_429_SHARE:.0%})")
    print(f"failed by 429   {by_429} (goal 0)")
    print(f"load average    {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    return 0 if code == 0 and invoiced == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
