"""`invoiceflow sandbox`: serves in the foreground with one log line per request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import typer
from typer.testing import CliRunner

from stripe_sandbox.cli import register

ROOT = Path(__file__).resolve().parents[2]
# A Typer app of our own: the project CLI may carry commands this test does not care about.
LAUNCH = """
import typer
from stripe_sandbox.cli import register
app = typer.Typer()
app.callback()(lambda: None)
register(app)
app()
"""


def test_help_lists_every_knob() -> None:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    result = CliRunner().invoke(app, ["sandbox", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in (
        "--host",
        "--port",
        "--latency-ms",
        "--jitter-ms",
        "--rate-limit",
        "--fail-before-write",
        "--fail-after-write",
        "--drop-after-write",
        "--webhook-duplicate",
        "--webhook-reorder",
        "--webhook-delay-ms",
        "--seed",
    ):
        assert flag in result.output


def test_serves_and_logs_one_line_per_request() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCH,
            "sandbox",
            "--port",
            "0",
            "--seed",
            "1",
            "--rate-limit",
            "test",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stderr is not None
        url = ""
        for line in process.stderr:
            if "listening on" in line:
                url = line.split("listening on ")[1].split()[0]
                break
        assert url, "the sandbox did not announce its address"
        secret = "sk_test_never_logged"
        response = httpx.get(url + "/v1/products", headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == 200
        assert httpx.get(url + "/_sandbox/config").json()["rate_limit"] == 25.0
        for _ in range(15):  # fill the log so the reads below cannot block
            httpx.get(url + "/_sandbox/requests")
        lines = [process.stderr.readline() for _ in range(20)]
        logged = [line for line in lines if "/v1/products" in line]
        assert len(logged) == 1 and "GET /v1/products -> 200" in logged[0]
        assert not any(secret in line for line in lines)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
