"""Throughput of the Stripe sandbox on one core.

The sandbox runs in a subprocess pinned to one CPU; this process, pinned to another, drives
it over several keep-alive connections with pre-encoded raw HTTP requests (the stripe SDK
would measure the client, not the server). Prints requests per second for a read workload
and a write mix.

    PYTHONPATH=. python bench/bench_sandbox.py [--seconds 5] [--connections 16] [--log]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk_test_bench"
SERVER = """
import logging, os, sys
os.sched_setaffinity(0, {{{cpu}}})
logging.basicConfig(level=logging.{level}, stream=sys.stderr)
from stripe_sandbox.server import serve_forever
serve_forever("127.0.0.1", {port}, seed=1)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def request(method: str, path: str, form: str = "", key: str | None = None) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: sandbox", f"Authorization: Bearer {KEY}"]
    if key:
        head.append(f"Idempotency-Key: {key}")
    if method != "GET":
        head += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(form)}"]
    return ("\r\n".join(head) + "\r\n\r\n" + form).encode()


async def call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def drive(
    port: int, seconds: float, connections: int, next_request: Callable[[], bytes]
) -> tuple[int, int]:
    done = errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            status = await call(reader, writer, next_request())
            done += 1
            errors += status != 200
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return done, errors


def setup(port: int) -> tuple[str, str, str]:
    def post(path: str, form: str) -> str:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=form.encode(),
            headers={"Authorization": f"Bearer {KEY}"},
        )
        with urllib.request.urlopen(req) as response:
            object_id: str = json.load(response)["id"]
            return object_id

    product = post("/v1/products", "name=Bench")
    price = post("/v1/prices", f"product={product}&unit_amount=100&currency=usd")
    customer = post("/v1/customers", "email=bench%40example.com")
    return product, price, customer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--log", action="store_true", help="keep the per-request log line on")
    args = parser.parse_args()

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[0], cpus[-1]
    port = free_port()
    code = SERVER.format(cpu=server_cpu, port=port, level="INFO" if args.log else "WARNING")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL if args.log else None
    )
    try:
        os.sched_setaffinity(0, {client_cpu})
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        product, price, customer = setup(port)
        counter = itertools.count()
        read = request("GET", f"/v1/products/{product}")

        def write_mix() -> bytes:
            n = next(counter)
            if n % 4 in (0, 1):
                return request(
                    "POST", "/v1/customers", f"email=c{n}%40example.com&name=C{n}", key=f"bench-{n}"
                )
            if n % 4 == 2:
                return request(
                    "POST",
                    "/v1/invoiceitems",
                    f"customer={customer}&pricing[price]={price}&quantity=2",
                    key=f"bench-{n}",
                )
            return request("POST", f"/v1/products/{product}", f"metadata[n]={n}", key=f"bench-{n}")

        print(
            f"sandbox on CPU {server_cpu}, load generator on CPU {client_cpu}, "
            f"{args.connections} keep-alive connections, {args.seconds:.0f} s each"
        )
        for name, next_request in (
            ("read  GET /v1/products/{id}", lambda: read),
            ("write mix (customers/invoiceitems/products)", write_mix),
        ):
            done, errors = asyncio.run(drive(port, args.seconds, args.connections, next_request))
            print(f"{name:45s} {done / args.seconds:8.0f} req/s  ({errors} non-200)")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
