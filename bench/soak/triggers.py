"""The three ways a request enters the pipeline, as an operator would use them:
`invoiceflow invoice FILE` (cli), `POST /invoices` on serve (http), and
`invoiceflow batch FILE [--shards N]` (batch). A run the monkey killed is
started again (journalled `restart`), up to a bound; what is still unfinished
after that is the finisher's."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.soak.journal import Journal
from bench.soak.processes import Processes
from bench.soak.workload import submitted

RERUNS_AFTER_KILL = 2
# A billing run whose shard's worker died waits for the crashed-runs automation
# (~95 s) before it ends; past this the soak kills it and the finisher takes over.
RUN_PATIENCE_SECONDS = 180.0
HTTP_PATIENCE_SECONDS = 300.0


class Triggers:
    def __init__(self, workdir: Path, processes: Processes, journal: Journal, token: str) -> None:
        self.files = workdir / "submitted"
        self.files.mkdir(exist_ok=True)
        self.processes = processes
        self.journal = journal
        self._token = token

    def cli(self, request: dict[str, Any], document: dict[str, Any] | None = None) -> int:
        """`invoiceflow invoice FILE --no-wait`; its exit code (rerun after a kill)."""
        document = document or submitted(request)
        suffix = "" if document == submitted(request) else ".changed"
        path = self.files / f"{request['request_id']}{suffix}.json"
        path.write_text(json.dumps(document))
        return self._run("cli", f"cli-{request['request_id']}", "invoice", str(path), "--no-wait")

    def batch(self, requests: list[dict[str, Any]], name: str, shards: int) -> int:
        """`invoiceflow batch FILE --shards N` over several requests; its exit code."""
        path = self.files / f"{name}.jsonl"
        path.write_text("".join(json.dumps(submitted(r)) + "\n" for r in requests))
        return self._run("batch", name, "batch", str(path), "--shards", str(shards))

    def _run(self, target: str, name: str, *args: str) -> int:
        code = -1
        for attempt in range(RERUNS_AFTER_KILL + 1):
            if self.processes.closing:
                break
            if attempt:
                self.journal.note("restart", target=target, name=name)
            proc = self.processes.run(target, name, *args)
            try:
                code = proc.process.wait(timeout=RUN_PATIENCE_SECONDS)
            except subprocess.TimeoutExpired:
                self.processes.kill(proc, why="overdue")
                code = proc.process.wait()
            if code >= 0:  # ended by itself, not killed
                return code
        return code

    def http(self, request: dict[str, Any], document: dict[str, Any] | None = None) -> int:
        """POST /invoices; its HTTP status. Retried while serve is down or restarting
        (connection refused, 503): safe, the run is keyed by request_id."""
        deadline = time.monotonic() + HTTP_PATIENCE_SECONDS
        while True:
            try:
                status = httpx.post(
                    f"{self.processes.serve_url}/invoices",
                    json=document or submitted(request),
                    headers={"Authorization": f"Bearer {self._token}"},
                    timeout=60,
                ).status_code
                if status != 503:
                    return status
            except httpx.HTTPError:
                status = 0
            if time.monotonic() > deadline or self.processes.closing:
                return status
            time.sleep(1)
