"""What the latency and memory benchmarks both stand up: the sandbox in a process
of its own, a real Prefect server, a ledger database, request files, and readings
of the machine (load, a process tree's memory).

Imported by `bench_payment_latency.py` and `bench_memory.py` (run as scripts from
the repository, so `bench/` is on sys.path).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
KEY = "sk_test_bench"
CUSTOMERS = [("acme", "Acme Corp"), ("initech", "Initech GmbH"), ("globex", "Globex Inc")]
SKUS = [
    ("consulting-hour", "Consulting hour", 15_000),
    ("support-plan", "Support plan", 99_000),
    ("seat-licence", "Seat licence", 999),
    ("travel", "Travel expenses", 4_825),
    ("hosting", "Managed hosting", 3_575),
]


def say(message: str) -> None:
    print(message, flush=True)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min, {os.cpu_count()} cores)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def sandbox_process(workdir: Path, *flags: str) -> Iterator[str]:
    """`invoiceflow sandbox` as a process of its own; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "sandbox.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "invoiceflow", "sandbox", "--port", str(port), *flags],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        wait_until(lambda: _answers(f"{url}/_sandbox/config"), "the sandbox", process, 60)
        yield url
    finally:
        stop(process)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


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
    from invoiceflow.local_prefect import local_prefect_server

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
def database(admin_url: str | None, workdir: Path) -> Iterator[str]:
    """A ledger URL: a SQLite file in `workdir`, or a new PostgreSQL database
    (dropped afterwards) on the server `admin_url` names."""
    if admin_url is None:
        yield f"sqlite:///{workdir / 'invoiceflow.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"invoiceflow_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        from invoiceflow.db.engine import dispose_engines

        dispose_engines()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
    """`count` requests of 1-3 lines as JSONL; how many lines in all."""
    rng = random.Random(seed)
    lines = 0
    with path.open("w") as out:
        for n in range(count):
            customer_id, name = rng.choice(CUSTOMERS)
            items = [
                {"sku": sku, "name": title, "unit_amount": amount, "quantity": rng.randint(1, 9)}
                for sku, title, amount in rng.sample(SKUS, rng.randint(1, 3))
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
