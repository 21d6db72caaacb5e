"""Payment latency: from Stripe sending `invoice.paid` to `invoiceflow status` showing paid.

The stack as it runs in production, each part a process of its own: the Stripe
sandbox (`invoiceflow sandbox`), a real Prefect server, and `invoiceflow serve`
(the webhook receiver, the settle sweeper and the deployments' runner). N
requests are billed first (`invoiceflow batch`, a subprocess) and the served
receiver is registered in the sandbox for the invoice events. Then the
customers pay, one every 1/RATE s through the SDK (`paid_out_of_band`), while
this script reads our ledger every 10 ms the way `status` does.

Per invoice, latency = the moment the ledger first shows it paid minus the moment
the sandbox started POSTing its `invoice.paid` (`sent_at` in the sandbox's
delivery log). Also printed: how long the receiver took to answer Stripe, how
long until every `settle` run (the story in the Prefect UI) completed, and
whether each payment was recorded exactly once (one `paid` move in its audit
trail).

    python bench/bench_payment_latency.py [--invoices 200] [--rate 5] [--settle-wait 300]
        [--database-url postgresql+psycopg://root@127.0.0.1:5432/test] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Prefect reads these when it is first imported.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import httpx
import stack
import stripe

EVENTS = [
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.voided",
    "invoice.marked_uncollectible",
]
POLL_SECONDS = 0.01
TOKEN = "bench-trigger-token-" + "x" * 16
GOAL_P99_SECONDS = 2.0


class PaidWatcher:
    """Reads the ledger every 10 ms, as `invoiceflow status` would, and notes when
    each request is first seen paid (epoch seconds, the sandbox's clock too)."""

    def __init__(self, database_url: str) -> None:
        from invoiceflow.db.engine import get_engine

        self.engine = get_engine(database_url)
        self.seen: dict[str, float] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="paid-watcher", daemon=True)

    def __enter__(self) -> PaidWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        from invoiceflow import ledger
        from invoiceflow.db.models import RecoveryPoint
        from invoiceflow.status import RequestStatus

        while not self._stop.is_set():
            rows = ledger.list_requests(self.engine, states=[RecoveryPoint.PAID])
            now = time.time()
            for row in rows:
                fresh = row.request_id not in self.seen
                if fresh and RequestStatus.from_row(row).state is RecoveryPoint.PAID:
                    self.seen[row.request_id] = now
            self.polls += 1
            self._stop.wait(POLL_SECONDS)


def bill(env: dict[str, str], work: Path, count: int) -> None:
    """N sent invoices, through the billing run as an operator would make them."""
    source = work / "requests.jsonl"
    stack.write_requests(source, f"lat-{int(time.time())}", count)
    stack.say(f"billing {count} requests (invoiceflow batch, a subprocess) …")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "invoiceflow", "batch", str(source)],
        env=env,
        cwd=stack.REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"invoiceflow batch exited {done.returncode}: {done.stderr[-2000:]}")
    stack.say(f"   {done.stdout.splitlines()[0]} ({time.monotonic() - started:.0f} s)")


def serve(env: dict[str, str], work: Path, port: int) -> subprocess.Popen[bytes]:
    log = (work / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "invoiceflow", "serve", "--port", str(port)],
        env=env,
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/invoices"

    def answers() -> bool:
        try:
            return httpx.post(url, timeout=2).status_code == 401
        except httpx.HTTPError:
            return False

    stack.wait_until(answers, "invoiceflow serve", process, 180)
    return process


def pay_all(client: stripe.StripeClient, invoice_ids: list[str], rate: float) -> float:
    """Pay one invoice every 1/rate s (a steady pace, not a burst); seconds it took."""
    started = time.monotonic()
    for n, invoice_id in enumerate(invoice_ids):
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
        client.v1.invoices.pay(invoice_id, {"paid_out_of_band": True})
    return time.monotonic() - started


def sent_at_by_request(client: stripe.StripeClient, sandbox_url: str) -> dict[str, float]:
    """When the sandbox first started delivering each request's `invoice.paid`."""
    request_of = {}
    for event in client.v1.events.list({"type": "invoice.paid", "limit": 100}).auto_paging_iter():
        metadata = event.data.object.to_dict().get("metadata") or {}
        request_of[event.id] = metadata.get("invoiceflow_request_id")
    first: dict[str, float] = {}
    for delivery in deliveries(sandbox_url):
        request_id = request_of.get(delivery["event"])
        if request_id and delivery["type"] == "invoice.paid":
            first[request_id] = min(first.get(request_id, delivery["sent_at"]), delivery["sent_at"])
    return first


def deliveries(sandbox_url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{sandbox_url}/_sandbox/webhooks", timeout=30).json()
    return found


def settle_runs_completed(api_url: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        return client.count_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["settle"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
            ),
        )


def paid_moves(database_url: str, request_ids: list[str]) -> dict[int, int]:
    """How many requests have 0, 1, 2 … `paid` moves in their audit trail."""
    from invoiceflow import ledger
    from invoiceflow.db.engine import get_engine

    engine = get_engine(database_url)
    counts: dict[int, int] = {}
    for request_id in request_ids:
        moves = sum(1 for e in ledger.audit_trail(engine, request_id) if e.to_point == "paid")
        counts[moves] = counts.get(moves, 0) + 1
    return counts


def report(latencies: list[float], answers: list[float], what: str) -> None:
    def row(name: str, values: list[float]) -> str:
        figures = [stack.percentile(values, f) for f in (0.5, 0.9, 0.99)] + [max(values)]
        return f"| {name} | " + " | ".join(f"{v * 1000:.0f}" for v in figures) + " |"

    stack.say("")
    stack.say(f"{what}")
    stack.say("| ms | p50 | p90 | p99 | max |")
    stack.say("| --- | --- | --- | --- | --- |")
    stack.say(row(f"`invoice.paid` sent → status shows paid ({len(latencies)})", latencies))
    stack.say(row(f"receiver's answer to Stripe ({len(answers)} deliveries)", answers))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5.0, help="payments per second")
    parser.add_argument("--database-url", help="a PostgreSQL server (default: a SQLite file)")
    parser.add_argument(
        "--settle-wait", type=float, default=300, help="seconds to wait for the settle runs"
    )
    parser.add_argument("--smoke", action="store_true", help="10 invoices: does it all work?")
    args = parser.parse_args()
    count = 10 if args.smoke else args.invoices

    stack.say(f"payment latency: {count} invoices, {args.rate:g} payments/s; {stack.load()}")
    with (
        stack.workdir("invoiceflow-bench-latency-") as work,
        stack.sandbox_process() as sandbox,
        stack.prefect_server() as (api_url, _),
        stack.database(args.database_url, work) as (database_url, _),
    ):
        sandbox_url = sandbox.url
        env = stack.app_env(sandbox_url, database_url, api_url)
        bill(env, work, count)
        client = stripe.StripeClient(
            stack.KEY, base_addresses={"api": sandbox_url}, max_network_retries=0
        )
        port = stack.free_port()
        endpoint = client.v1.webhook_endpoints.create(
            {"url": f"http://127.0.0.1:{port}/webhooks/stripe", "enabled_events": EVENTS}
        )
        served = serve(
            {
                **env,
                "STRIPE_WEBHOOK_SECRET": endpoint.secret or "",
                "INVOICEFLOW_TRIGGER_TOKEN": TOKEN,
                **{
                    f"INVOICEFLOW_{name}_CRON": "off"
                    for name in ("BILLING", "DUNNING", "RECONCILE")
                },
            },
            work,
            port,
        )
        try:
            from invoiceflow import ledger

            with PaidWatcher(database_url) as watcher:
                rows = ledger.list_requests(watcher.engine)
                invoices = {r.request_id: r.stripe_invoice_id for r in rows if r.stripe_invoice_id}
                stack.say(f"serve is up; paying {len(invoices)} invoices; {stack.load()}")
                paying = pay_all(client, list(invoices.values()), args.rate)
                stack.say(f"   paid in {paying:.1f} s; waiting for the ledger; {stack.load()}")
                deadline = time.monotonic() + 120
                while len(watcher.seen) < len(invoices) and time.monotonic() < deadline:
                    time.sleep(0.1)
                seen, polls = dict(watcher.seen), watcher.polls
            stack.say(f"   {len(seen)}/{len(invoices)} seen paid, {polls} polls of the ledger")
            settle_started = time.monotonic()
            while settle_runs_completed(api_url) < len(invoices):
                if time.monotonic() - settle_started > args.settle_wait:
                    break
                time.sleep(1)
            settled = settle_runs_completed(api_url)
            stack.say(
                f"   settle runs completed: {settled}/{len(invoices)}, the last"
                f" {time.monotonic() - settle_started:.0f} s after the last payment was seen"
            )
        finally:
            stack.stop(served, timeout=60)
        sent_at = sent_at_by_request(client, sandbox_url)
        latencies = [seen[r] - sent_at[r] for r in invoices if r in seen and r in sent_at]
        answers = [
            d["time"] - d["sent_at"]
            for d in deliveries(sandbox_url)
            if d["type"] == "invoice.paid" and d["status"] is not None
        ]
        moves = paid_moves(database_url, list(invoices))
        if not latencies:
            raise SystemExit("no payment was seen paid; see the serve log")
        report(
            latencies,
            answers,
            f"{'SQLite' if args.database_url is None else 'PostgreSQL'}"
            f" ledger, {args.rate:g} payments/s; {stack.load()}",
        )
        stack.say(f"paid moves per request: {moves} (want {{1: {len(invoices)}}})")
        p99 = stack.percentile(latencies, 0.99)
        ok = moves == {1: len(invoices)} and len(seen) == len(invoices)
        stack.say(f"p99 {p99:.2f} s: {'within' if p99 < GOAL_P99_SECONDS else 'OVER'} the 2 s goal")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
