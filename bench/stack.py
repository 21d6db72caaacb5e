"""What the benchmarks share: the sandbox in a process of its own, a Prefect
server, a ledger database, generated requests, and readings of the machine (load,
CPU seconds and memory of a process tree).

The sandbox runs as a separate process so that its CPU is not ours: a billing
run's figures then count our process, the Prefect server and the sandbox apart.
The scripts run from the repository, so `bench/` is on sys.path and `import stack`
finds this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
KEY = "sk_test_bench"
WRITE_METHODS = ("POST", "DELETE")
CUSTOMERS = [
    ("acme", "Acme Corp"),
    ("initech", "Initech GmbH"),
    ("globex", "Globex Inc"),
    ("umbrella", "Umbrella plc"),
]
# sku, name, unit amount in cents. Each bench takes a prefix of its own length
# (SKUS[:5], SKUS[:6]): the requests it generates, and so its figures, stay as before.
SKUS = [
    ("consulting-hour", "Consulting hour", 15_000),
    ("support-plan", "Support plan", 99_000),
    ("seat-licence", "Seat licence", 999),
    ("travel", "Travel expenses", 4_825),
    ("hosting", "Managed hosting", 3_575),
    ("training-day", "Training day", 120_000),
    ("storage-tb", "Storage, per TB-month", 2_300),
    ("api-calls-1k", "API calls, per 1000", 40),
]


def say(text: str = "") -> None:
    print(text, flush=True)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    cpus = os.cpu_count()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min), {cpus} CPUs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SANDBOX = """
import signal, sys
from stripe_sandbox import start_sandbox
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
def sandbox_process(*, log_path: Path | None = None, **config: Any) -> Iterator[Sandbox]:
    """The Stripe sandbox in a subprocess (this interpreter, warning-level logs, into
    `log_path` when given, else on our stderr)."""
    settings = ", ".join(f"{name}={value!r}" for name, value in config.items())
    code = _SANDBOX.format(port=free_port(), config=settings)
    log = log_path.open("ab") if log_path is not None else None
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True
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
        if log is not None:
            log.close()


def _process_times() -> dict[int, tuple[int, float]]:
    """Every living process: pid -> (parent pid, user + system CPU seconds)."""
    tick = os.sysconf("SC_CLK_TCK")
    processes: dict[int, tuple[int, float]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        processes[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return processes


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process and its living descendants (0 if unknown)."""
    if pid is None:
        return 0.0
    processes = _process_times()
    children: dict[int, list[int]] = {}
    for child, (parent, _cpu) in processes.items():
        children.setdefault(parent, []).append(child)
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += processes.get(current, (0, 0.0))[1]
        todo += children.get(current, [])
    return total


def database_cpu_seconds(url: str) -> float:
    """User + system CPU seconds of the PostgreSQL backends now serving `url`'s
    database (0 for SQLite, whose work is in its caller's process). Backends
    that ended in between are not counted: measure while the pool is open."""
    from sqlalchemy.engine import make_url

    if not url:
        return 0.0
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.database:
        return 0.0
    total = 0.0
    for pid, (_parent, cpu) in _process_times().items():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres:") and f" {parsed.database} " in title:
            total += cpu
    return total


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


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


# batch_requests cycles through six skus.
BATCH_SKUS = SKUS[:6]


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
            [BATCH_SKUS[(n + m) % len(BATCH_SKUS)] for m in range(lines)],
        )
        for n in range(count)
    ]


@contextmanager
def database(
    admin_url: str | None, workdir: Path | None = None, keep: bool = False
) -> Iterator[tuple[str, str]]:
    """(URL, description) of a ledger: a SQLite file (in `workdir`, else in a
    temporary directory removed afterwards), or a new PostgreSQL database, dropped
    afterwards unless `keep`, on the server `admin_url` names."""
    from invoiceflow.db.engine import dispose_engines

    if admin_url is None:
        directory = workdir or Path(tempfile.mkdtemp(prefix="invoiceflow-bench-db-"))
        try:
            yield f"sqlite:///{directory / 'invoiceflow.db'}", "SQLite (temporary file)"
        finally:
            dispose_engines()
            if workdir is None:
                shutil.rmtree(directory, ignore_errors=True)
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"invoiceflow_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False), f"PostgreSQL ({url!r})"
    finally:
        dispose_engines()
        if not keep:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def wait_until(
    predicate: Any, what: str, process: subprocess.Popen[Any] | None, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.2)


def stop(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def prefect_server(**extra_env: str) -> Iterator[tuple[str, int | None]]:
    """(API URL, server pid): a throwaway Prefect server, unless PREFECT_API_URL is set."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"], None
        return
    from invoiceflow_testing.local_prefect import local_prefect_server

    with local_prefect_server(**extra_env) as server:
        say(f"Prefect server {server.api_url} (started in {server.started_in_seconds:.0f} s)")
        yield server.api_url, _listening_pid(server.port)


def _listening_pid(port: int) -> int | None:
    """The pid of the process listening on 127.0.0.1:`port` (found through /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
    return None


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def app_env(sandbox_url: str, database_url: str, api_url: str, **extra: str) -> dict[str, str]:
    """The environment an invoiceflow process of the benchmark runs with."""
    return {
        **os.environ,
        "STRIPE_API_KEY": KEY,
        "STRIPE_API_BASE": sandbox_url,
        "INVOICEFLOW_DATABASE_URL": database_url,
        "INVOICEFLOW_AWAIT_PAID_SECONDS": "0",
        # The sandbox sets no rate limit here, so neither do we (a caller may).
        "INVOICEFLOW_STRIPE_RATE": "off",
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        **extra,
    }


def write_requests(path: Path, prefix: str, count: int, seed: int = 7) -> int:
    """`count` requests of 1-3 lines as JSONL (three customers, five skus); how many
    lines in all."""
    rng = random.Random(seed)
    lines = 0
    with path.open("w") as out:
        for n in range(count):
            customer_id, name = rng.choice(CUSTOMERS[:3])
            items = [
                {"sku": sku, "name": title, "unit_amount": amount, "quantity": rng.randint(1, 9)}
                for sku, title, amount in rng.sample(SKUS[:5], rng.randint(1, 3))
            ]
            lines += len(items)
            request = {
                "request_id": f"{prefix}-{n:05d}",
                "customer": {
                    "id": customer_id,
                    "email": f"billing@{customer_id}.example",
                    "name": name,
                },
                "currency": "usd",
                "days_until_due": 30,
                "description": "Monthly services",
                "items": items,
            }
            out.write(json.dumps(request) + "\n")
    return lines


def tree_rss_kib(pid: int) -> int:
    """Resident memory of `pid` and all its descendants now (KiB), from /proc."""
    total = 0
    for one in [pid, *descendants(pid)]:
        total += status_kib(one, "VmRSS") or 0
    return total


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                for child in map(int, children.read().split()):
                    found += [child, *descendants(child)]
    return found


def status_kib(pid: int, field: str) -> int | None:
    """A `VmXxx` field of /proc/<pid>/status in KiB; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def busiest_second(times: list[float]) -> int:
    """Most calls in any window of one second (sliding, starting at each call).

    Counting windows, not timing anything, is how a rate is checked on a busy
    machine: the sandbox's own log times each call on arrival.
    """
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most
