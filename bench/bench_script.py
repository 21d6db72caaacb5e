"""Our billing run next to a plain script doing Stripe's quickstart, same sandbox, same run.

The script, one invoice after another with the stripe SDK: create customer,
product, price, invoice, one invoice item per line, finalize, send (6 + k
calls). Our billing run bills requests of the same shape — a new customer, k
lines of one new sku — through the whole machinery (Prefect, the ledger,
leases, intents, lookups). Both at 0 ms and at 60 ms of Stripe latency.

Prints invoices per wall-second and per CPU-second of each, and ours as a
ratio to the script measured in the same run (the machine is shared; ratios
within one run are what count), then the load.

    python bench/bench_script.py [--invoices 40] [--requests 200] [--lines 3] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import cpu_meter
from cpu_meter import OURS, SERVER, Meter, standard_meter
from stack import (
    KEY,
    Sandbox,
    database,
    load,
    own_cpu_seconds,
    prefect_server,
    request_data,
    sandbox_process,
    say,
)


@dataclass
class Pace:
    invoices: int
    wall: float
    cpu: float  # the client's CPU: the script's, or our process's plus the Prefect server's

    @property
    def per_wall_second(self) -> float:
        return self.invoices / self.wall

    @property
    def per_cpu_second(self) -> float:
        return self.invoices / self.cpu


def quickstart(sandbox: Sandbox, count: int, lines: int, tag: str) -> Pace:
    """Stripe's quickstart, invoice after invoice, as a plain script would."""
    import stripe

    client = stripe.StripeClient(KEY, base_addresses={"api": sandbox.url}, max_network_retries=0)
    cpu, started = own_cpu_seconds(), time.perf_counter()
    for n in range(count):
        customer = client.v1.customers.create(
            {"email": f"billing@{tag}-{n}.example", "name": f"Script {n}"}
        )
        product = client.v1.products.create({"name": f"Product {tag} {n}"})
        price = client.v1.prices.create(
            {"product": product.id, "unit_amount": 1000, "currency": "usd"}
        )
        invoice = client.v1.invoices.create(
            {
                "customer": customer.id,
                "collection_method": "send_invoice",
                "days_until_due": 30,
                "pending_invoice_items_behavior": "exclude",
            }
        )
        for quantity in range(1, lines + 1):
            client.v1.invoice_items.create(
                {
                    "customer": customer.id,
                    "invoice": invoice.id,
                    "pricing": {"price": price.id},
                    "quantity": quantity,
                }
            )
        client.v1.invoices.finalize_invoice(invoice.id)
        client.v1.invoices.send_invoice(invoice.id)
    return Pace(count, time.perf_counter() - started, own_cpu_seconds() - cpu)


def ours(workdir: Path, meter: Meter, count: int, lines: int, tag: str) -> Pace:
    """Our billing run of `count` requests of the same shape: new customer, one new sku.
    Its CPU is ours plus the Prefect server's until the server is idle again."""
    from flows.billing_run import billing_run_flow

    entries = [
        request_data(f"{tag}-{n:05d}", f"{tag}-customer-{n}", [(f"{tag}-sku-{n}", "Product", 1000)])
        for n in range(count)
    ]
    for entry in entries:  # k lines of the one sku, as the script's invoice items
        entry["items"] = [{**entry["items"][0], "quantity": q} for q in range(1, lines + 1)]
    source = workdir / f"{tag}.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in entries))
    meter.settle()
    start = meter.read()
    report = billing_run_flow(source=str(source), run_id=tag)
    usage = meter.until_idle(start, meter.read())
    if not report.ok:
        raise SystemExit("\n".join(report.lines()))
    return Pace(count, usage.returned_after, usage.cpu[OURS] + usage.cpu[SERVER])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=40, help="the script's, per latency")
    parser.add_argument("--requests", type=int, default=200, help="our billing run's")
    parser.add_argument("--lines", type=int, default=3)
    parser.add_argument("--latencies", default="0,60", help="ms per Stripe call")
    parser.add_argument("--smoke", action="store_true", help="5 invoices, 10 requests, 0 ms")
    args = parser.parse_args()
    if args.smoke:
        cpu_meter.quick()
        args.invoices, args.requests, args.latencies = 5, 10, "0"

    from invoiceflow.prefect_env import configure_prefect

    configure_prefect()
    results: list[tuple[float, Pace, Pace]] = []
    with ExitStack() as stack:
        say("Starting a Prefect server and the sandbox (a process of its own)…")
        _api, server_pid = stack.enter_context(prefect_server())
        sandbox = stack.enter_context(sandbox_process())
        meter = standard_meter(server_pid, sandbox.pid)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url, _ = stack.enter_context(database(None))
        os.environ.update(
            {
                "STRIPE_API_KEY": KEY,
                "STRIPE_API_BASE": sandbox.url,
                "INVOICEFLOW_DATABASE_URL": url,
                # The script knows no rate limit and the sandbox sets none: neither do
                # we, or this would compare our limiter (25/s in test mode) with it.
                "INVOICEFLOW_STRIPE_RATE": "off",
            }
        )
        from invoiceflow.runtime import get_runtime

        get_runtime()
        # The first billing run of a process pays Prefect's one-time setup; not counted.
        meter.baseline()
        ours(workdir, meter, 2, args.lines, f"warmup{int(time.time())}")
        for latency in (float(ms) for ms in args.latencies.split(",")):
            sandbox.configure(latency_ms=latency)
            tag = f"l{latency:g}-{int(time.time())}"
            say(f"{latency:g} ms: the script, {args.invoices} invoices…")
            script = quickstart(sandbox, args.invoices, args.lines, tag)
            say(f"{latency:g} ms: our billing run, {args.requests} requests…")
            run = ours(workdir, meter, args.requests, args.lines, tag)
            results.append((latency, script, run))
    table(results, args)


def table(results: list[tuple[float, Pace, Pace]], args: argparse.Namespace) -> None:
    from invoiceflow.settings import get_settings

    say(
        f"\nInvoices of {args.lines} lines, each for a new customer and product; the script one "
        f"after another, our billing run on {get_settings().batch_workers} workers. "
        "CPU: the script's process; ours plus the Prefect server's until it was idle again.\n"
    )
    say(
        "| Stripe latency | script: invoices/s (wall / CPU) | ours: invoices/s (wall / CPU) "
        "| ours / script (wall / CPU) |"
    )
    say("| --- | ---: | ---: | ---: |")
    for latency, script, run in results:
        say(
            f"| {latency:g} ms | {script.per_wall_second:.1f} / {script.per_cpu_second:.1f} "
            f"| {run.per_wall_second:.1f} / {run.per_cpu_second:.1f} "
            f"| {run.per_wall_second / script.per_wall_second:.1f}x / "
            f"{run.per_cpu_second / script.per_cpu_second:.2f}x |"
        )
    say(f"\n{load()}")


if __name__ == "__main__":
    main()
