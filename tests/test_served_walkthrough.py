"""docs/service.md's served walk-through runs as printed: the sandbox and Prefect's
server in terminals of their own (`<!-- served:NAME (runs on) -->`, started in the
background here and waited for), then the session block, whole, in one bash.

Free ports replace the page's 12111, 4200 and 8080; the user's shell is a fresh
one (no PREFECT_, STRIPE_ or INVOICEFLOW_ settings, a Prefect home and a data
directory of the test's own, the venv's bin on PATH), in a copy of the
repository's examples/. What a person checks is checked: the 202, the request
`paid` in `invoiceflow status`, and the run in Prefect's UI (its API) `Paid`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

PAGE = REPO / "docs" / "service.md"
PORTS = {"12111": "sandbox", "4200": "prefect", "8080": "serve"}
REQUEST_ID = "2026-11-kaiju-licences"


def served_block(name: str) -> tuple[str, bool]:
    """The fenced block after `<!-- served:NAME ... -->`; whether it keeps running."""
    page = PAGE.read_text(encoding="utf-8")
    match = re.search(
        rf"<!-- served:{name}( \(runs on\))? -->\n```\w*\n(.*?)\n```", page, re.DOTALL
    )
    assert match, f"docs/service.md has no served:{name} block"
    return match.group(2), match.group(1) is not None


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _shell(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "STRIPE_", "INVOICEFLOW_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    return env


def _wait_port(port: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", int(port)), 1):
            return
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.5)


@contextlib.contextmanager
def _terminal(
    script: str, env: dict[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A terminal of its own: the block in bash, its process group stopped after."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-e", "-c", script],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.heavy
def test_the_served_walkthrough_runs_as_printed(tmp_path: Path) -> None:
    ports = {page_port: _free_port() for page_port in PORTS}

    def as_run(text: str) -> str:
        for page_port, port in ports.items():
            text = re.sub(rf":{page_port}\b", f":{port}", text)
            text = re.sub(rf"--port {page_port}\b", f"--port {port}", text)
        return text

    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = _shell(tmp_path)
    with contextlib.ExitStack() as terminals:
        for name, page_port, wait in (("sandbox", "12111", 60), ("prefect", "4200", 180)):
            script, runs_on = served_block(name)
            assert runs_on, f"served:{name} is a terminal of its own"
            log = tmp_path / f"{name}.log"
            process = terminals.enter_context(_terminal(as_run(script), env, tmp_path, log))
            _wait_port(ports[page_port], process, log, wait)

        script, runs_on = served_block("session")
        assert not runs_on
        try:
            session = subprocess.run(
                ["bash", "-e", "-c", as_run(script)],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=420,
            )
        finally:
            written = tmp_path / "serve.log"
            serve_log = written.read_text(errors="replace") if written.exists() else ""
            print(serve_log[-4000:])  # shown when it fails
        assert session.returncode == 0, f"{session.stdout}\n{session.stderr}\n{serve_log}"
        printed = session.stdout.splitlines()

        accepted = json.loads(printed[0])
        assert accepted["request_id"] == REQUEST_ID and accepted["state"] == "SCHEDULED"
        assert printed[-1].startswith(f"{REQUEST_ID}: paid"), printed
        assert "Traceback" not in session.stderr + serve_log, serve_log

        # What the UI shows: the run named after the request, Paid (Prefect's API).
        api = f"http://127.0.0.1:{ports['4200']}/api"
        run = httpx.get(f"{api}/flow_runs/{accepted['flow_run_id']}", timeout=30).json()
        assert run["name"] == f"invoice-{REQUEST_ID}"
        assert (run["state"]["type"], run["state"]["name"]) == ("COMPLETED", "Paid"), run
