"""What a warm invoice costs, per process, counted until the Prefect server is idle.

One process, one sandbox (a process of its own: no latency, no rate limit), one
Prefect server, one ledger (PostgreSQL by default), and the same warm customers
(made by a billing run in this process: 4 Stripe writes per invoice). In turn,
each started once the server is idle and counted until it is idle again
(`cpu_meter`, each process's idle rate subtracted):

1. `quickstart`: Stripe's quickstart with the SDK, invoice after invoice
   (`bench_script.quickstart`: customer, product, price, invoice, k items,
   finalize, send; 6 + k calls): the client's CPU;
2. `pipeline`: the same invoicing without Prefect: a thread pool of
   INVOICEFLOW_BATCH_WORKERS threads calling the plain functions a billing
   run's unit calls (`ledger.submit`, `pipeline.bill` in sequence);
3. `billing run, chunk C` for each C of `--chunks`: `billing_run_flow`, what
   `invoiceflow batch` runs, with INVOICEFLOW_BATCH_CHUNK=C (a build without
   chunks ignores it: then every C is a task per invoice).

Prints CPU ms per invoice for ours, the Prefect server, the sandbox and
PostgreSQL, invoices/s to the run's return and to the server's idle, the load
(/proc/loadavg) at each start and end, and the issue-23 goals as ratios within
this one run:

- client CPU per invoice (ours + Prefect server) ÷ the quickstart's (goal ≤ 2.0);
- Prefect's share of a billing run's client CPU: the server's, plus what our
  process spends beyond the pipeline without Prefect (goal ≤ 15 %);
- a billing run's sustained rate ÷ the pipeline's, and the pipeline's CPU per
  invoice (all processes) ÷ the billing run's (goal ≥ 0.8).

    python bench/bench_cost.py [--requests 200] [--lines 3] [--customers 20]
        [--chunks 1,10] [--database postgres|sqlite] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import cpu_meter
from bench_script import quickstart
from cpu_meter import OURS, SERVER, Meter, Usage, loadavg, standard_meter
from stack import KEY, batch_requests, database, prefect_server, sandbox_process, say

POSTGRES = os.environ.get(
    "INVOICEFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
GROUPS = (OURS, SERVER, "sandbox", "PostgreSQL")


@dataclass
class Measured:
    name: str
    invoices: int
    usage: Usage

    def ms(self, group: str) -> float:
        return self.usage.ms_per(group, self.invoices)

    @property
    def client_ms(self) -> float:
        return self.ms(OURS) + self.ms(SERVER)

    @property
    def total_ms(self) -> float:
        return sum(self.ms(group) for group in GROUPS)

    @property
    def sustained(self) -> float:
        return self.invoices / self.usage.idle_after


def measure(meter: Meter, name: str, invoices: int, run: Any) -> Measured:
    say(f"[{name}] {invoices} invoices… (load {loadavg()})")
    meter.settle()
    start = meter.read()
    run()
    usage = meter.until_idle(start, meter.read())
    done = Measured(name, invoices, usage)
    say(
        f"[{name}] returned after {usage.returned_after:.1f} s, server idle after "
        f"{usage.idle_after:.1f} s; CPU ms per invoice: "
        + ", ".join(f"{group} {done.ms(group):.1f}" for group in GROUPS)
    )
    return done


def without_prefect(requests: list[Any]) -> None:
    """The billing run's unit work on a plain thread pool: submit, bill in sequence.

    Its step lines are off, as a billing run's unit keeps them (one line per
    request, which PREFECT_LOGGING_LEVEL=WARNING drops here): console logging
    costs CPU that would be counted against the pipeline only."""
    import logging

    from invoiceflow import lease, ledger, pipeline
    from invoiceflow.request import parse_request
    from invoiceflow.runtime import get_runtime

    rt = get_runtime()

    def one(data: Any) -> None:
        request = parse_request(data)
        ledger.submit(rt.engine, request)
        owner = lease.new_owner(uuid.uuid4().hex)
        billed = pipeline.bill(rt, request, owner, pipeline.in_sequence(rt))
        if billed.error is not None:
            raise billed.error

    ours = logging.getLogger("invoiceflow")
    level = ours.level
    ours.setLevel(logging.WARNING)
    try:
        with ThreadPoolExecutor(rt.settings.batch_workers) as pool:
            list(pool.map(one, requests))
    finally:
        ours.setLevel(level)


def billing_run(source: Path, run_id: str, chunk: int) -> None:
    from flows.billing_run import billing_run_flow
    from invoiceflow.runtime import reset_runtime

    os.environ["INVOICEFLOW_BATCH_CHUNK"] = str(chunk)
    reset_runtime()  # the settings are read again
    report = billing_run_flow(source=str(source), run_id=run_id)
    if report.counts.get("invoiced", 0) != report.total:
        raise SystemExit("\n".join(report.lines()))


def write_jsonl(path: Path, requests: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per run")
    parser.add_argument("--lines", type=int, default=3)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--chunks", default="1,10", help="INVOICEFLOW_BATCH_CHUNK values")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--smoke", action="store_true", help="10 requests, 3 customers, SQLite")
    args = parser.parse_args()
    if args.smoke:
        cpu_meter.quick()
        args.requests, args.customers, args.database = 10, 3, "sqlite"
    chunks = [int(c) for c in args.chunks.split(",")]

    from invoiceflow.prefect_env import configure_prefect

    configure_prefect()
    results: list[Measured] = []
    with ExitStack() as stack:
        say("Starting a Prefect server and the sandbox (a process of its own)…")
        _api, server_pid = stack.enter_context(prefect_server())
        sandbox = stack.enter_context(sandbox_process())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        admin = POSTGRES if args.database == "postgres" else None
        url, description = stack.enter_context(database(admin))
        os.environ.update(
            {
                "STRIPE_API_KEY": KEY,
                "STRIPE_API_BASE": sandbox.url,
                "INVOICEFLOW_DATABASE_URL": url,
                # No rate limit in the sandbox; neither in us, nor in the script.
                "INVOICEFLOW_STRIPE_RATE": "off",
            }
        )
        meter = standard_meter(server_pid, sandbox.pid, ledger_url=url)
        meter.baseline()
        tag = f"cost{int(time.time())}"
        say(f"Ledger: {description}. Warm-up: {args.customers} customers in this process…")
        warm = batch_requests(f"{tag}-warm", args.customers, args.lines, args.customers, tag)
        billing_run(write_jsonl(workdir / "warm.jsonl", warm), f"{tag}-warm", max(chunks))

        def requests(name: str) -> list[Any]:
            return batch_requests(f"{tag}-{name}", args.requests, args.lines, args.customers, tag)

        results.append(
            measure(
                meter,
                "quickstart",
                args.requests,
                lambda: quickstart(sandbox, args.requests, args.lines, tag),
            )
        )
        plain = requests("plain")
        results.append(measure(meter, "pipeline", args.requests, lambda: without_prefect(plain)))
        for chunk in chunks:
            source = write_jsonl(workdir / f"c{chunk}.jsonl", requests(f"c{chunk}"))
            results.append(
                measure(
                    meter,
                    f"billing run, chunk {chunk}",
                    args.requests,
                    lambda s=source, c=chunk: billing_run(s, f"{tag}-c{c}", c),  # type: ignore[misc]
                )
            )
    table(results, args, description)


def table(results: list[Measured], args: argparse.Namespace, description: str) -> None:
    from invoiceflow.settings import get_settings

    say(
        f"\n{args.requests} invoices of {args.lines} lines per run over {args.customers} warm "
        f"customers (the quickstart makes its own each time), {get_settings().batch_workers} "
        f"workers, ledger on {description.split(' ')[0]}; CPU counted until the Prefect server "
        "was idle again, each process's idle rate subtracted.\n"
    )
    say(
        "| run | invoices/s: to return / to server idle | CPU ms per invoice: ours / Prefect "
        "server / sandbox / PostgreSQL | total | load start → end |"
    )
    say("| --- | ---: | --- | ---: | --- |")
    for r in results:
        u = r.usage
        say(
            f"| {r.name} | {r.invoices / u.returned_after:.1f} / {r.sustained:.1f} "
            f"| {' / '.join(f'{r.ms(g):.1f}' for g in GROUPS)} | {r.total_ms:.1f} "
            f"| {u.load_start} → {u.load_end}{'' if u.idle else ' (server busy at the bound)'} |"
        )
    script = results[0]
    plain = results[1]
    say("\nGoals (issue 23), ratios within this run:")
    for run in results[2:]:
        prefect = run.ms(SERVER) + max(0.0, run.ms(OURS) - plain.ms(OURS))
        say(
            f"- {run.name}: client CPU (ours + server) {run.client_ms:.1f} ms = "
            f"{run.client_ms / script.ms(OURS):.2f} times the quickstart's "
            f"{script.ms(OURS):.1f} ms "
            f"(goal ≤ 2.0); Prefect's share {prefect:.1f} ms = {prefect / run.client_ms:.0%} of "
            f"the client CPU (goal ≤ 15 %), {prefect / plain.ms(OURS):.0%} of the invoicing "
            f"itself; against the pipeline without Prefect: {run.sustained / plain.sustained:.2f}"
            f" of its sustained rate, {plain.total_ms / run.total_ms:.2f} of its CPU per invoice"
            " (goal ≥ 0.8)"
        )


if __name__ == "__main__":
    main()
