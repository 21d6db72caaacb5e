"""Big billing runs: peak memory and time per request, 1k against 10k requests.

For each size N: a generated JSONL of N requests (1-3 lines each, three
customers, five SKUs), billed by `invoiceflow batch FILE` as a subprocess,
against the Stripe sandbox in a process of its own (no latency, no rate limit),
a real Prefect server and a fresh ledger (a SQLite file, or a new PostgreSQL
database with --database-url). Each size gets a fresh sandbox and ledger; the
Prefect server is shared, as in production.

Printed per size: the batch process's peak RSS (the kernel's own maximum,
`ru_maxrss` from wait4), its RSS as the run went (from /proc, at each tenth of
the requests), wall time and time per request, and the Prefect server's RSS
(its whole process tree) after the run; CPU per request of the batch, the
Prefect server (until it is idle again, its idle rate subtracted: `cpu_meter`)
and the sandbox (on a loaded machine, what to compare: wall
time is what the other loads leave over), and Stripe calls per request from
the sandbox's request log. Then the ratios of the last size to the first:
per-request time and CPU, and peak RSS. Goals: peak RSS under 1 GB, and the
big run within 1.5x the small one's time per request.

On a busy machine a big run can take hours: --time-limit M stops each run
after M minutes (Ctrl-C, as an operator would; the batch is resumable) and
reports it for the requests it billed by then.

    python bench/bench_memory.py [--requests 1000,10000] [--workers 8] [--time-limit M]
        [--database-url postgresql+psycopg://root@127.0.0.1:5432/test] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Prefect reads these when it is first imported.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import cpu_meter
import stack
from cpu_meter import SERVER, Meter, tree

GOAL_PEAK_MIB = 1024
GOAL_RATIO = 1.5
SAMPLE_SECONDS = 0.5


@dataclass
class Run:
    requests: int  # billed (all of them, unless the time limit stopped the run)
    size: int
    lines: int
    exit_code: int
    wall: float
    peak_kib: int
    rss_path: list[tuple[int, int]] = field(default_factory=list)  # (billed, RSS KiB)
    server_kib: int | None = None
    summary: str = ""
    load: str = ""
    # CPU seconds spent on this run: the batch process (its own rusage), the sandbox
    # and the Prefect server (their process trees, from /proc). Less load-bound than wall.
    batch_cpu: float = 0.0
    sandbox_cpu: float = 0.0
    server_cpu: float = 0.0
    stripe_reads: int = 0
    stripe_writes: int = 0

    @property
    def per_request_ms(self) -> float:
        return self.wall / max(1, self.requests) * 1000

    def cpu_ms(self, seconds: float) -> float:
        return seconds / max(1, self.requests) * 1000

    @property
    def calls_per_request(self) -> str:
        n = max(1, self.requests)
        return f"{self.stripe_reads / n:.2f} + {self.stripe_writes / n:.2f}"

    @property
    def label(self) -> str:
        whole = f"{self.size:,}"
        return whole if self.requests == self.size else f"{whole} (stopped at {self.requests:,})"


def billed_count(database_url: str) -> int:
    """How many entries of the run have an outcome (the manifest, as the CLI shows it)."""
    from sqlalchemy import text

    from invoiceflow.db.engine import get_engine

    try:
        with get_engine(database_url).connect() as connection:
            found = connection.execute(
                text("SELECT count(*) FROM billing_run_item WHERE outcome IS NOT NULL")
            ).scalar_one()
            return int(found)
    except Exception:  # the batch has not created its tables yet, or holds the lock
        return -1


def bill(
    size: int,
    work: Path,
    api_url: str,
    server_pid: int | None,
    database_url: str,
    workers: int,
    time_limit: float,
) -> Run:
    """Bill `size` requests; past `time_limit` seconds the batch gets Ctrl-C (it exits
    130, resumable) and the run is reported for what it billed until then."""
    # The sandbox's defaults: no added latency, no rate limit (memory, not Stripe's pace).
    with stack.sandbox_process() as sandbox:
        sandbox_url = sandbox.url
        source = work / f"requests-{size}.jsonl"
        lines = stack.write_requests(source, f"mem{size}", size)
        env = stack.app_env(
            sandbox_url, database_url, api_url, INVOICEFLOW_BATCH_WORKERS=str(workers)
        )
        stack.say(f"{size} requests ({lines} lines): invoiceflow batch …; {stack.load()}")
        err = (work / f"batch-{size}.err").open("wb")
        # The server's CPU is counted until it is idle again, its idle rate subtracted.
        meter = Meter({SERVER: lambda: tree(server_pid)})
        meter.baseline(seconds=5.0)
        meter.settle()
        server_start = meter.read()
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "invoiceflow", "batch", str(source)],
            env=env,
            cwd=stack.REPO,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        rss_path: list[tuple[int, int]] = []
        server_peak = [0]
        stop = threading.Event()
        billed_last = [0]

        def sample() -> None:
            next_tenth = 0
            while not stop.wait(SAMPLE_SECONDS):
                if server_pid is not None:
                    server_peak[0] = max(server_peak[0], stack.tree_rss_kib(server_pid))
                billed = billed_count(database_url)
                billed_last[0] = max(billed_last[0], billed)
                elapsed = time.monotonic() - started
                if billed >= next_tenth * size / 10:
                    rss = stack.status_kib(process.pid, "VmRSS")
                    if rss is not None:
                        rss_path.append((billed, rss))
                        stack.say(
                            f"   {elapsed:5.0f} s: billed {billed}/{size}, "
                            f"batch RSS {rss / 1024:.0f} MiB; {stack.load()}"
                        )
                    next_tenth = billed * 10 // size + 1
                if elapsed > time_limit and process.poll() is None:
                    stack.say(f"   time limit ({time_limit:.0f} s): stopping the batch")
                    process.send_signal(signal.SIGINT)
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        assert process.stdout is not None
        out = process.stdout.read().decode(errors="replace")
        # wait4, not wait: the kernel's peak resident size of exactly this child.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        stop.set()
        sampler.join(timeout=10)
        err.close()
        server_cpu = meter.until_idle(server_start, meter.read()).cpu[SERVER]
        sandbox_cpu = stack.cpu_seconds(sandbox.pid)
        reads, writes = stack.count_calls(sandbox.requests())
    done = size if process.returncode == 0 else max(billed_last[0], 0)
    run = Run(done, size, lines, process.returncode, wall, usage.ru_maxrss, rss_path)
    run.batch_cpu = usage.ru_utime + usage.ru_stime
    run.sandbox_cpu, run.server_cpu = sandbox_cpu, server_cpu
    run.stripe_reads, run.stripe_writes = reads, writes
    if out:
        run.summary = out.splitlines()[0]
    elif run.requests < size:
        run.summary = f"stopped by the time limit at {run.requests} of {size}"
    else:
        run.summary = (work / f"batch-{size}.err").read_text()[-500:]
    run.server_kib = server_peak[0] or None
    run.load = stack.load()
    stack.say(
        f"   exit {run.exit_code}, {run.wall:.0f} s ({run.per_request_ms:.0f} ms/request), "
        f"peak RSS {run.peak_kib / 1024:.0f} MiB; CPU ms per request: batch "
        f"{run.cpu_ms(run.batch_cpu):.0f}, Prefect server {run.cpu_ms(run.server_cpu):.0f}, "
        f"sandbox {run.cpu_ms(run.sandbox_cpu):.1f}; Stripe calls per request "
        f"{run.calls_per_request} (reads + writes); {run.summary}"
    )
    return run


def report(runs: list[Run], database: str) -> bool:
    stack.say("")
    stack.say(f"billing runs, {database} ledger; {stack.load()}")
    stack.say(
        "| requests | wall (s) | per request (ms) | CPU ms per request: batch / Prefect "
        "server / sandbox | Stripe calls per request | batch peak RSS (MiB) "
        "| Prefect server RSS, peak (MiB) | exit |"
    )
    stack.say("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        server = f"{run.server_kib / 1024:.0f}" if run.server_kib else "n/a"
        cpu = " / ".join(
            f"{run.cpu_ms(seconds):.0f}"
            for seconds in (run.batch_cpu, run.server_cpu, run.sandbox_cpu)
        )
        stack.say(
            f"| {run.label} | {run.wall:.0f} | {run.per_request_ms:.0f} | {cpu} "
            f"| {run.calls_per_request} | {run.peak_kib / 1024:.0f} | {server} "
            f"| {run.exit_code} |"
        )
    first, last = runs[0], runs[-1]
    time_ratio = last.per_request_ms / first.per_request_ms
    memory_ratio = last.peak_kib / first.peak_kib
    ok = all(r.requests == r.size and r.peak_kib / 1024 < GOAL_PEAK_MIB for r in runs)
    if len(runs) > 1:
        cpu_ratio = last.cpu_ms(last.batch_cpu + last.server_cpu) / max(
            1e-9, first.cpu_ms(first.batch_cpu + first.server_cpu)
        )
        stack.say(
            f"{last.label} vs {first.label}: time per request x{time_ratio:.2f} "
            f"(goal <= {GOAL_RATIO}), CPU per request (batch + Prefect server) "
            f"x{cpu_ratio:.2f}, peak RSS x{memory_ratio:.2f}"
        )
        ok = ok and time_ratio <= GOAL_RATIO
    for run in runs:
        # From the first tenth on: before it, the process is still importing and starting.
        path = [(n, rss) for n, rss in run.rss_path if n >= run.size // 10]
        if len(path) >= 2:
            (n0, r0), (n1, r1) = path[0], path[-1]
            if n1 > n0:
                growth = (r1 - r0) / (n1 - n0)
                stack.say(
                    f"{run.label}: batch RSS grew {growth:.1f} KiB per request "
                    f"({r0 / 1024:.0f} MiB at {n0} billed, {r1 / 1024:.0f} MiB at {n1})"
                )
    if any(r.requests < r.size for r in runs):
        stack.say("a run was stopped by --time-limit: the goals are not judged")
        return False
    stack.say("within the goals" if ok else "OUTSIDE the goals (or a run failed)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", default="1000,10000", help="sizes, comma-separated")
    parser.add_argument("--workers", type=int, default=8, help="INVOICEFLOW_BATCH_WORKERS")
    parser.add_argument("--database-url", help="a PostgreSQL server (default: a SQLite file)")
    parser.add_argument(
        "--time-limit", type=float, default=0, help="minutes per run; then report it as partial"
    )
    parser.add_argument("--smoke", action="store_true", help="50 and 200 requests")
    args = parser.parse_args()
    if args.smoke:
        cpu_meter.quick()
    sizes = [50, 200] if args.smoke else [int(n) for n in args.requests.split(",")]

    stack.say(f"billing-run memory: {sizes} requests; {stack.load()}")
    runs = []
    with stack.workdir("invoiceflow-bench-memory-") as work, stack.prefect_server() as server:
        api_url, server_pid = server
        for size in sizes:
            size_dir = work / str(size)
            size_dir.mkdir()
            with stack.database(args.database_url, size_dir) as (database_url, _):
                limit = args.time_limit * 60 or float("inf")
                runs.append(
                    bill(size, size_dir, api_url, server_pid, database_url, args.workers, limit)
                )
    database = "SQLite" if args.database_url is None else "PostgreSQL"
    return 0 if report(runs, database) else 1


if __name__ == "__main__":
    sys.exit(main())
