"""The shared Stripe rate limit under load: achieved rate, 429s and the limiter's own cost.

A sandbox process answers 429 above --rate calls a second (as Stripe does);
--processes worker processes of --threads threads each call it through
`call_with_retries` for --seconds, sharing one limit through each backend, and
once with the limiter off. Prints a markdown table and the machine's load.

    python bench/bench_rate_limit.py [--backend all|memory|postgres|redis|off]
        [--processes 2] [--threads 8] [--rate 25] [--seconds 20]

PostgreSQL: a scratch database on INVOICEFLOW_BENCH_POSTGRES_URL
(default postgresql+psycopg://root@127.0.0.1:5432/test), dropped afterwards.
Redis: INVOICEFLOW_BENCH_REDIS_URL (default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stack import REPO, busiest_second, database, free_port, percentile

WORKER = REPO / "tests" / "rate_limit_worker.py"
KEY = "sk_test_bench_rate_limit"
POSTGRES_URL = os.environ.get(
    "INVOICEFLOW_BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("INVOICEFLOW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = ("memory", "postgres", "redis", "off")


@contextmanager
def sandbox(rate: float, latency_ms: float, jitter_ms: float) -> Iterator[str]:
    """A sandbox process of its own, rate-limited like Stripe."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "invoiceflow",
            "sandbox",
            "--port",
            str(port),
            "--rate-limit",
            str(rate),
            "--latency-ms",
            str(latency_ms),
            "--jitter-ms",
            str(jitter_ms),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/_sandbox/config", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("the sandbox did not start within 30 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def control(url: str, method: str, path: str) -> Any:
    request = urllib.request.Request(f"{url}{path}", method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


@contextmanager
def backend_env(backend: str, rate: float, workdir: Path) -> Iterator[dict[str, str]]:
    env = {
        "STRIPE_API_KEY": KEY,
        "INVOICEFLOW_STRIPE_RATE": "off" if backend == "off" else str(rate),
        "INVOICEFLOW_DATABASE_URL": f"sqlite:///{workdir / f'{backend}.db'}",
    }
    if backend == "postgres":
        with database(POSTGRES_URL) as (url, _):
            yield {
                **env,
                "INVOICEFLOW_DATABASE_URL": url,
                "INVOICEFLOW_RATE_LIMIT_BACKEND": "postgres",
            }
        return
    if backend == "redis":
        env["INVOICEFLOW_RATE_LIMIT_BACKEND"] = REDIS_URL
    elif backend == "memory":
        env["INVOICEFLOW_RATE_LIMIT_BACKEND"] = "memory"
    yield env


def run_workers(env: dict[str, str], processes: int, threads: int, seconds: float) -> list[Any]:
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "--threads", str(threads), "--seconds", str(seconds)],
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for worker in workers:
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != "ready":
            raise SystemExit(f"a worker did not start: {worker.communicate()[1][-2000:]}")
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=seconds * 10 + 120)
        if worker.returncode != 0:
            raise SystemExit(f"a worker failed: {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def measure(backend: str, args: argparse.Namespace, url: str, workdir: Path) -> dict[str, Any]:
    control(url, "DELETE", "/_sandbox/data")
    with backend_env(backend, args.rate, workdir) as env:
        env["STRIPE_API_BASE"] = url
        results = run_workers(env, args.processes, args.threads, args.seconds)
    log = [e for e in control(url, "GET", "/_sandbox/requests") if e["path"].startswith("/v1/")]
    ok = [e["time"] for e in log if e["status"] == 200]
    span = max(ok) - min(ok) if len(ok) > 1 else float("nan")
    reserve_ms = [ms for result in results for ms in result["reserve_ms"]]
    return {
        "backend": backend,
        "calls": len(ok),
        "rate": len(ok) / span,
        "refused": sum(1 for e in log if e["status"] == 429),
        "busiest": busiest_second([e["time"] for e in log]),
        "failed": sum(len(result["failed"]) for result in results),
        "p50": percentile(reserve_ms, 0.50) if reserve_ms else float("nan"),
        "p99": percentile(reserve_ms, 0.99) if reserve_ms else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("all", *BACKENDS), default="all")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--latency-ms", type=float, default=60.0, help="per call, like a network")
    parser.add_argument("--jitter-ms", type=float, default=40.0)
    args = parser.parse_args()
    backends = BACKENDS if args.backend == "all" else (args.backend,)

    rows = []
    loads = [os.getloadavg()[0]]
    with (
        sandbox(args.rate, args.latency_ms, args.jitter_ms) as url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for backend in backends:
            print(
                f"… {backend}: {args.processes} processes x {args.threads} threads, "
                f"{args.seconds:g} s",
                file=sys.stderr,
                flush=True,
            )
            rows.append(measure(backend, args, url, Path(tmp)))
            loads.append(os.getloadavg()[0])

    print(
        f"\n{args.processes} processes x {args.threads} threads, sandbox at {args.rate:g}/s "
        f"(+{args.latency_ms:g} to {args.latency_ms + args.jitter_ms:g} ms), "
        f"{args.seconds:g} s each\n"
    )
    print(
        "| backend | calls ok | achieved /s | 429s | busiest second | failed "
        "| store p50 / p99 (ms) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        cost = "—" if row["backend"] == "off" else f"{row['p50']:.1f} / {row['p99']:.1f}"
        print(
            f"| {row['backend']} | {row['calls']} | {row['rate']:.1f} | {row['refused']} | "
            f"{row['busiest']} | {row['failed']} | {cost} |"
        )
    print(
        f"\nload average (1 min) during the runs: {min(loads):.1f} to {max(loads):.1f} "
        f"on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
