"""What the speed benchmarks share: the sandbox in a process of its own, a Prefect
server, a database, generated requests, CPU seconds per process, the load.

The sandbox runs as a separate process so that its CPU is not ours: a billing
run's figures then count our process, the Prefect server and the sandbox apart.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_flow import database

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk_test_bench"
WRITE_METHODS = ("POST", "DELETE")
__all__ = ["database"]

_SANDBOX = """
import signal, sys
from invoiceflow.sandbox import start_sandbox
running = start_sandbox(port={port}, seed=1, {config})
print(running.url, flush=True)
signal.sigwait({{signal.SIGTERM, signal.SIGINT}})
running.stop()
"""


@dataclass
class Sandbox:
    """The sandbox's control plane, over HTTP, and its process id (for its CPU time)."""

    url: str
    pid: int

    def _control(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def configure(self, **config: Any) -> None:
        with self._control() as control:
            control.post("/_sandbox/config", json=config).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        with self._control() as control:
            result: list[dict[str, Any]] = control.get("/_sandbox/requests").json()
            return result

    def reset(self) -> None:
        with self._control() as control:
            control.delete("/_sandbox/data").raise_for_status()


@contextmanager
def sandbox_process(**config: Any) -> Iterator[Sandbox]:
    """The Stripe sandbox in a subprocess (this interpreter, warning-level logs)."""
    from invoiceflow.local_prefect import _free_port

    settings = ", ".join(f"{name}={value!r}" for name, value in config.items())
    code = _SANDBOX.format(port=_free_port(), config=settings)
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url:
            raise RuntimeError("the sandbox process did not start")
        yield Sandbox(url, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=15)


@contextmanager
def prefect_server() -> Iterator[tuple[str, int | None]]:
    """(API URL, server pid): a throwaway server unless PREFECT_API_URL is set."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"], None
        return
    from invoiceflow.local_prefect import local_prefect_server

    with local_prefect_server() as server:
        yield server.api_url, _pid_listening_on(server.port)


def _pid_listening_on(port: int) -> int | None:
    """The process serving `port` (from /proc/net/tcp and the fds), for its CPU time."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process and its living descendants (0 if unknown)."""
    if pid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo += children.get(current, [])
    return total


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def load() -> str:
    one, five, fifteen = os.getloadavg()
    cpus = os.cpu_count()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min), {cpus} CPUs"


def count_calls(entries: list[dict[str, Any]]) -> tuple[int, int]:
    """(reads, writes) answered in a slice of the sandbox's request log; 429s not counted."""
    reads = writes = 0
    for entry in entries:
        if entry["status"] == 429:
            continue
        if entry["method"] in WRITE_METHODS:
            writes += 1
        else:
            reads += 1
    return reads, writes


_ID = re.compile(r"^[a-z]+_[A-Za-z0-9]{8,}$|^invoiceflow_.*$")


def shape(entries: list[dict[str, Any]]) -> str:
    """What the calls were, e.g. `POST /v1/invoices/{id}/add_lines x20`."""
    kinds = Counter(
        f"{e['method']} " + "/".join(_ID.sub("{id}", part) for part in e["path"].split("/"))
        for e in entries
        if e["status"] != 429
    )
    return ", ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items()))


SKUS = [
    ("consulting-hour", "Consulting hour", 15_000),
    ("support-plan", "Support plan", 99_000),
    ("seat-licence", "Seat licence", 999),
    ("travel", "Travel expenses", 4_825),
    ("hosting", "Managed hosting", 3_575),
    ("training-day", "Training day", 120_000),
]


def request_data(request_id: str, customer: str, skus: list[tuple[str, str, int]]) -> Any:
    """A billing request as JSON data: one line per sku, quantity 1-9."""
    rng = random.Random(request_id)
    return {
        "request_id": request_id,
        "customer": {
            "id": customer,
            "email": f"billing@{customer}.example",
            "name": customer.title(),
        },
        "currency": "usd",
        "days_until_due": 30,
        "items": [
            {"sku": sku, "name": name, "unit_amount": amount, "quantity": rng.randint(1, 9)}
            for sku, name, amount in skus
        ],
    }


def batch_requests(
    prefix: str, count: int, lines: int, customers: int, customer_prefix: str
) -> list[Any]:
    """`count` requests of `lines` lines over `customers` customers and the shared skus."""
    return [
        request_data(
            f"{prefix}-{n:05d}",
            f"{customer_prefix}-customer-{n % customers}",
            [SKUS[(n + m) % len(SKUS)] for m in range(lines)],
        )
        for n in range(count)
    ]


def say(text: str = "") -> None:
    print(text, flush=True)


def elapsed(started: float) -> float:
    return time.perf_counter() - started
