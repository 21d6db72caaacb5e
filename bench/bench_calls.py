"""Stripe calls per invoice, from the sandbox's request log, next to the quickstart's.

Three billing runs of N requests of k lines (each request its own customer):

- cold: new customers, new skus (products and prices), in this process;
- warm, same process: the same customers and skus billed again right after;
- warm, another process: billed once more by `invoiceflow batch`, for which
  the customers are last month's: the steady state of a monthly run.

Stripe's quickstart (create customer, product, price, invoice, one invoice item
per line, finalize, send) needs 3 + k calls warm and 6 + k cold (one product
and price; our requests have k skus, so its cold count is 4 + 3k here).

    python bench/bench_calls.py [--requests 20] [--lines 3] [--smoke]
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
from pathlib import Path
from typing import Any

os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from stack import (
    KEY,
    REPO,
    Sandbox,
    count_calls,
    database,
    load,
    prefect_server,
    request_data,
    sandbox_process,
    say,
    shape,
)


def requests(prefix: str, run: str, count: int, lines: int) -> list[Any]:
    """Request n of every run bills customer n for k skus of its own."""
    return [
        request_data(
            f"{prefix}-{run}-{n:04d}",
            f"{prefix}-customer-{n}",
            [(f"{prefix}-{n}-sku-{m}", f"Product {m}", 1000 + m) for m in range(lines)],
        )
        for n in range(count)
    ]


def write_jsonl(path: Path, entries: list[Any]) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return str(path)


def measure(sandbox: Sandbox, n: int, run: Any) -> tuple[float, float, str]:
    before = len(sandbox.requests())
    run()
    entries = sandbox.requests()[before:]
    reads, writes = count_calls(entries)
    return reads / n, writes / n, shape(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--lines", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="4 requests")
    args = parser.parse_args()
    n, k = (4 if args.smoke else args.requests), args.lines

    from invoiceflow.prefect_env import configure_prefect

    configure_prefect()
    with ExitStack() as stack:
        say("Starting a Prefect server and the sandbox (a process of its own)…")
        stack.enter_context(prefect_server())
        sandbox = stack.enter_context(sandbox_process())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url, _ = stack.enter_context(database(None))
        env = {
            "STRIPE_API_KEY": KEY,
            "STRIPE_API_BASE": sandbox.url,
            "INVOICEFLOW_DATABASE_URL": url,
            # Counts calls, not rate: the sandbox has no limit, so neither do we.
            "INVOICEFLOW_STRIPE_RATE": "off",
        }
        os.environ.update(env)
        prefix = f"calls{int(time.time())}"

        def in_another_process(run: str) -> Any:
            def go() -> None:
                source = write_jsonl(workdir / f"{run}.jsonl", requests(prefix, run, n, k))
                subprocess.run(
                    [sys.executable, "-m", "invoiceflow", "batch", source],
                    cwd=REPO,
                    env={**os.environ, **env},
                    check=True,
                    capture_output=True,
                )

            return go

        def here(run: str) -> Any:
            def go() -> None:
                from flows.billing_run import billing_run_flow

                source = write_jsonl(workdir / f"{run}.jsonl", requests(prefix, run, n, k))
                report = billing_run_flow(source=source)
                if not report.ok:
                    raise SystemExit("\n".join(report.lines()))

            return go

        rows = [
            ("cold: new customer and skus", measure(sandbox, n, here("cold")), 4 + 3 * k),
            ("warm, customer made by this process", measure(sandbox, n, here("warm")), 3 + k),
            (
                "warm, customer from an earlier process (a monthly run)",
                measure(sandbox, n, in_another_process("monthly")),
                3 + k,
            ),
        ]
    say(f"\n{n} requests of {k} lines each, each for its own customer; billing runs.\n")
    say("| invoice | Stripe reads | Stripe writes | calls | quickstart |")
    say("| --- | ---: | ---: | ---: | ---: |")
    for name, (reads, writes, _), quickstart in rows:
        say(f"| {name} | {reads:.2f} | {writes:.2f} | {reads + writes:.2f} | {quickstart} |")
    say("\nThe calls, all requests together:")
    for name, (_, _, calls), _ in rows:
        say(f"- {name}: {calls}")
    say(f"\n{load()}")


if __name__ == "__main__":
    main()
