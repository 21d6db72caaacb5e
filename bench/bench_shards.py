"""Shards on one machine: `invoiceflow batch --shards N` against one shard, same run.

The scale-out topology of `bench_throughput` (a Prefect server on PostgreSQL,
the `invoiceflow` process work pool, N workers; `invoiceflow_testing.local_workers`),
the sandbox in a process of its own (no rate limit, `--latency-ms` per call), a
PostgreSQL ledger. After a warm-up run that makes the customers, the same
number of requests is billed with `--shards 1` (in the CLI's own process) and
with `--shards N` (one billing-shard run per worker), each started once the
Prefect server is idle and counted until it is idle again (`cpu_meter`).

Prints invoices/s over each run's billing window (first to last Stripe call),
N shards' rate ÷ one shard's against the goal of 0.8·N, and how free the cores
were: the share of the machine's CPU time left idle during each run
(/proc/stat) and the load (/proc/loadavg) at its start and end. The goal is
about cores that are free: on a machine whose cores the run and its
neighbours already fill, N shards cannot add up to N times one.

    python bench/bench_shards.py [--requests 200] [--shards 2] [--latency-ms 0] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import cpu_meter
from cpu_meter import Usage, machine_idle, standard_meter
from stack import (
    KEY,
    REPO,
    _listening_pid,
    batch_requests,
    database,
    sandbox_process,
    say,
    workdir,
)

POSTGRES = os.environ.get(
    "INVOICEFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
LINES = 3
GOAL = 0.8


@dataclass
class ShardRun:
    shards: int
    invoices: int
    window: float  # first to last Stripe call of the run
    usage: Usage
    idle_share: float  # of the machine's CPU time during the run, left idle

    @property
    def rate(self) -> float:
        return self.invoices / self.window if self.window else 0.0


def batch(source: Path, shards: int, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "invoiceflow", "batch", str(source), "--shards", str(shards)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"batch --shards {shards} exited {done.returncode}: {done.stdout[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per run")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--smoke", action="store_true", help="8 requests, 2 customers")
    args = parser.parse_args()
    if args.smoke:
        cpu_meter.quick()
        args.requests, args.customers = 8, 2

    from invoiceflow_testing.local_workers import local_workers

    results: list[ShardRun] = []
    with ExitStack() as stack:
        work = stack.enter_context(workdir("invoiceflow-bench-shards-"))
        sandbox = stack.enter_context(sandbox_process(latency_ms=args.latency_ms))
        url, _ = stack.enter_context(database(POSTGRES))
        app_env = {
            "STRIPE_API_KEY": KEY,
            "STRIPE_API_BASE": sandbox.url,
            "INVOICEFLOW_DATABASE_URL": url,
            "INVOICEFLOW_STRIPE_RATE": "off",
        }
        topology = stack.enter_context(local_workers(args.shards, app_env))
        env = {**topology.env}
        meter = standard_meter(
            _listening_pid(topology.server.port),
            sandbox.pid,
            server_database_url=topology.database_url,
            ledger_url=url,
        )
        meter.baseline()
        tag = f"sh{int(time.time())}"

        def source(name: str, count: int) -> Path:
            requests = batch_requests(f"{tag}-{name}", count, LINES, args.customers, tag)
            path = work / f"{name}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in requests))
            return path

        say(f"warm-up: {args.customers} customers, --shards {args.shards}…")
        batch(source("warm", args.customers), args.shards, env)
        for shards in (1, args.shards):
            path = source(f"s{shards}", args.requests)
            say(f"--shards {shards}: {args.requests} requests…")
            calls_before = len(sandbox.requests())
            meter.settle()
            idle_before = machine_idle()
            start = meter.read()
            batch(path, shards, env)
            returned = meter.read()
            idle_after = machine_idle()
            usage = meter.until_idle(start, returned)
            times = [c["time"] for c in sandbox.requests()[calls_before:]]
            idle_share = (idle_after[0] - idle_before[0]) / max(1, idle_after[1] - idle_before[1])
            run = ShardRun(shards, args.requests, max(times) - min(times), usage, idle_share)
            say(
                f"--shards {shards}: {run.rate:.1f} invoices/s over {run.window:.1f} s, "
                f"{idle_share:.0%} of the machine's CPU idle, load {usage.load_start} → "
                f"{usage.load_end}"
            )
            results.append(run)

    one, many = results
    say(
        f"\n{args.requests} requests x {LINES} lines per run, warm customers, sandbox latency "
        f"{args.latency_ms:g} ms, no rate limit; ledger and Prefect on PostgreSQL.\n"
    )
    say("| shards | invoices/s (billing window) | machine CPU left idle | load start → end |")
    say("| ---: | ---: | ---: | --- |")
    for run in results:
        say(
            f"| {run.shards} | {run.rate:.1f} | {run.idle_share:.0%} "
            f"| {run.usage.load_start} → {run.usage.load_end} |"
        )
    ratio = many.rate / one.rate if one.rate else 0.0
    say(
        f"\n{args.shards} shards reach {ratio:.2f}x one shard's rate = "
        f"{ratio / args.shards:.2f}·N (goal ≥ {GOAL}·N while cores are free; "
        f"{os.cpu_count()} cores, {one.idle_share:.0%} of them idle during the one-shard run)"
    )


if __name__ == "__main__":
    main()
