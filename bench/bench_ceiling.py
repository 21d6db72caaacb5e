"""The orchestration ceiling: how fast a billing run goes when Stripe costs nothing.

A billing run (`flows.billing_run.billing_run_flow`, in this process) of N
requests x L lines over C customers, against the sandbox in a process of its
own with no latency and no rate limit, a real Prefect server, and a real
database (SQLite file, then PostgreSQL). The customers, products and prices
exist already, so every request is the steady-state path, in two scenarios:

- `earlier`: a warm-up `invoiceflow batch` in another process made them, as
  last month's run would have: each invoice looks for itself first (1 Search)
  and makes 4 writes;
- `here`: the warm-up ran in this process within the hour (a long-lived
  worker, or a run that made its customers): 4 writes, the case the live
  bound of 100 calls/s ÷ 4 writes = 25 invoices/s is about.

First, on the same server, the same number of empty invoice tasks that only
publish their story artifact (`prefect_floor`), before and after the billing
runs: Prefect's own cost, and the most any billing run can reach on this
machine; each billing run is then also given as a fraction of that rate, a
ratio that holds when the machine's speed does not.

Each run starts once the Prefect server is idle and is counted until it is
idle again (`cpu_meter`): the server records task runs and artifacts from its
backlog long after the flow returns. Prints invoices per wall-second to the
flow's return and to the server's idle, and CPU ms per invoice for this
process, the Prefect server, the sandbox and (on PostgreSQL) the database
server's backends, each process's idle rate subtracted, with the server's
CPU as counting at the return would have had it, and the load (/proc/loadavg)
at each run's start and end.

    python bench/bench_ceiling.py [--requests 500] [--lines 3] [--customers 50]
        [--databases sqlite,postgres] [--scenarios here,earlier]
        [--prefect-database sqlite] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import cpu_meter
from cpu_meter import SERVER, Backends, Meter, Usage, postgres_database, standard_meter
from stack import (
    KEY,
    REPO,
    Sandbox,
    batch_requests,
    count_calls,
    database,
    load,
    prefect_server,
    sandbox_process,
    say,
    shape,
)

POSTGRES = os.environ.get(
    "INVOICEFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)


@dataclass
class Result:
    database: str
    scenario: str
    requests: int
    usage: Usage  # counted until the Prefect server was idle again
    reads: int
    writes: int
    invoiced: int

    @property
    def rate(self) -> float:
        """Invoices per second until the flow returned: what the caller waits."""
        return self.requests / self.usage.returned_after

    @property
    def sustained(self) -> float:
        """Invoices per second until the server was idle: what the machine sustains."""
        return self.requests / self.usage.idle_after

    def per_invoice(self, group: str) -> str:
        return f"{self.usage.ms_per(group, self.requests):.1f}"


def write_jsonl(path: Path, requests: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return path


def billing_run(
    name: str,
    url: str,
    sandbox: Sandbox,
    meter: Meter,
    args: argparse.Namespace,
    workdir: Path,
    scenario: str,
) -> Result:
    from invoiceflow.runtime import get_runtime, reset_runtime

    env = {
        "STRIPE_API_KEY": KEY,
        "STRIPE_API_BASE": sandbox.url,
        "INVOICEFLOW_DATABASE_URL": url,
        # The ceiling is orchestration's: no Stripe rate limit, in the sandbox or ours.
        "INVOICEFLOW_STRIPE_RATE": "off",
    }
    os.environ.update(env)
    reset_runtime()
    get_runtime()  # migrate before anything is timed
    prefix = f"{name}-{scenario}-{int(time.time())}"
    # One request per customer made the customers, products and prices.
    warm = batch_requests(f"{prefix}-warm", args.customers, args.lines, args.customers, prefix)
    warm_file = write_jsonl(workdir / f"{prefix}-warm.jsonl", warm)
    from flows.billing_run import billing_run_flow

    if scenario == "here":
        say(f"[{name}/{scenario}] warm-up: {args.customers} customers in this process…")
        billing_run_flow(source=str(warm_file), run_id=f"{prefix}-w")
    else:
        say(f"[{name}/{scenario}] warm-up: {args.customers} customers in another process…")
        command = [sys.executable, "-m", "invoiceflow", "batch", str(warm_file)]
        done = subprocess.run(
            [*command, "--run-id", f"{prefix}-w"],
            cwd=REPO,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"warm-up failed ({done.returncode}): {done.stderr[-2000:]}")

    requests = batch_requests(prefix, args.requests, args.lines, args.customers, prefix)
    source = write_jsonl(workdir / f"{prefix}.jsonl", requests)
    say(f"[{name}/{scenario}] billing run: {args.requests} requests x {args.lines} lines…")
    log_before = len(sandbox.requests())

    meter.groups["PostgreSQL"] = Backends(postgres_database(url))
    meter.settle()
    start = meter.read()
    report = billing_run_flow(source=str(source), run_id=prefix)
    usage = meter.until_idle(start, meter.read())
    entries = sandbox.requests()[log_before:]
    reads, writes = count_calls(entries)
    say(f"[{name}/{scenario}] Stripe calls: {shape(entries)}")
    invoiced = report.counts.get("invoiced", 0)
    say(f"[{name}/{scenario}] {report.lines()[0]}")
    return Result(name, scenario, args.requests, usage, reads, writes, invoiced)


def prefect_alone(meter: Meter, args: argparse.Namespace, when: str) -> Result:
    """The same number of empty invoice tasks (`prefect_floor`): Prefect's share, measured.

    Run before the billing runs and after them, each counted until the server
    is idle again: the server records the tasks' states and artifacts for many
    seconds after the flow returns, and stopping at the return is what made
    this look bimodal and up to 22 tasks/s before (issue 23).
    """
    from prefect_floor import prefect_floor_flow

    say(f"[Prefect alone, {when}] {args.requests} empty invoice tasks with their story artifact…")
    meter.groups["PostgreSQL"] = Backends("")
    meter.settle()
    start = meter.read()
    done = prefect_floor_flow(prefix=f"floor-{int(time.time())}", count=args.requests)
    usage = meter.until_idle(start, meter.read())
    return Result("none", f"Prefect alone, {when}", args.requests, usage, 0, 0, done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--lines", type=int, default=3)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument(
        "--scenarios", default="here,earlier", help="who made the customers: here, earlier"
    )
    parser.add_argument(
        "--prefect-database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the Prefect server's own database (its PostgreSQL backends count as the server's)",
    )
    parser.add_argument("--smoke", action="store_true", help="20 requests, 5 customers: seconds")
    args = parser.parse_args()
    if args.smoke:
        cpu_meter.quick()
        args.requests, args.customers = 20, 5
    wanted = args.databases.split(",")

    from invoiceflow.prefect_env import configure_prefect

    configure_prefect()
    results: list[Result] = []
    with ExitStack() as stack:
        say("Starting a Prefect server and the sandbox (a process of its own)…")
        server_database = ""  # the server's own SQLite, inside its process
        server_env = {}
        if args.prefect_database == "postgres":
            from invoiceflow_testing.local_workers import prefect_database

            server_database = stack.enter_context(prefect_database(POSTGRES))
            server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = server_database
        api_url, server_pid = stack.enter_context(prefect_server(**server_env))
        sandbox = stack.enter_context(sandbox_process())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        say(f"Prefect {api_url} (pid {server_pid}); sandbox {sandbox.url} (pid {sandbox.pid})")
        # Its PostgreSQL backends, if any, count as the server's.
        meter = standard_meter(server_pid, sandbox.pid, server_database_url=server_database)
        meter.baseline()
        results.append(prefect_alone(meter, args, "before"))
        for name in wanted:
            admin = None if name == "sqlite" else POSTGRES
            for scenario in args.scenarios.split(","):
                with database(admin) as (url, _description):
                    results.append(billing_run(name, url, sandbox, meter, args, workdir, scenario))
        results.append(prefect_alone(meter, args, "after"))
    table(results, args)


def table(results: list[Result], args: argparse.Namespace) -> None:
    from invoiceflow.settings import get_settings

    settings = get_settings()
    say(
        f"\nBilling run of {args.requests} requests x {args.lines} lines over {args.customers} "
        f"warm customers, {settings.batch_workers} workers, {settings.batch_chunk} per chunk "
        "(if this build chunks); sandbox in its own process, no latency, no rate limit; the "
        f"Prefect server on {args.prefect_database}. CPU counted until the Prefect server was "
        "idle again, each process's idle rate subtracted.\n"
    )
    say(
        "| database | customers made | invoices/s: to return / to server idle | server idle "
        "after return | CPU ms per invoice: ours / Prefect server / sandbox / PostgreSQL "
        "| server CPU if counted at return | Stripe reads + writes per invoice | load start → end |"
    )
    say("| --- | --- | ---: | ---: | --- | ---: | --- | --- |")
    for r in results:
        u = r.usage
        at_return = u.at_return.get(SERVER, 0.0) / r.requests * 1000
        say(
            f"| {r.database} | {r.scenario} | {r.rate:.1f} / {r.sustained:.1f} "
            f"| {u.idle_after - u.returned_after:.0f} s{'' if u.idle else ' (bound)'} "
            f"| {r.per_invoice('ours')} / {r.per_invoice(SERVER)} / {r.per_invoice('sandbox')} / "
            f"{r.per_invoice('PostgreSQL') if r.database == 'postgres' else '—'} "
            f"| {at_return:.1f} | {r.reads / r.requests:.2f} + {r.writes / r.requests:.2f} "
            f"| {u.load_start} → {u.load_end} |"
        )
    floors = [r for r in results if r.database == "none"]
    slowest = min(floors, key=lambda r: r.sustained)
    fastest = max(floors, key=lambda r: r.sustained)
    say(
        f"\nPrefect alone sustains {slowest.sustained:.1f} to {fastest.sustained:.1f} tasks/s "
        "(until the server is idle), the most any billing run with a task per invoice sustains "
        "on this machine and server; each run's share of it: "
        + ", ".join(
            f"{r.database}/{r.scenario} {r.sustained / fastest.sustained:.2f} to "
            f"{r.sustained / slowest.sustained:.2f}"
            for r in results
            if r.database != "none"
        )
    )
    say(f"\n{load()}")


if __name__ == "__main__":
    main()
