"""The three ways a request enters the pipeline, as an operator would use them:
`invoiceflow invoice FILE` (cli), `POST /invoices` on serve (http), and
`invoiceflow batch FILE [--shards N]` (batch). A run the monkey killed is
started again (journalled `restart`), up to a bound; what is still unfinished
after that is the finisher's.

Two faults of issue 19 ride on a submission, armed by the monkey (`arm`):
`serve_kill_at_start` SIGKILLs serve right after a 202, once the triggered run is
being started, then POSTs the request again as a client does (with backoff, until
it is billed) and journals whether it got billed within a bound;
`worker_kill_pending` SIGKILLs every worker while a sharded billing run has a
shard PENDING, and each billing run in flight then must end by itself (journalled
`batch_end`, `overdue` when the soak had to kill it)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.soak import prefect_api
from bench.soak.journal import Journal
from bench.soak.processes import Processes
from bench.soak.workload import submitted

RERUNS_AFTER_KILL = 2
# A billing run whose shard's worker died waits for the crashed-runs automation
# (~95 s) before it ends; past this the soak kills it and the finisher takes over.
RUN_PATIENCE_SECONDS = 180.0
# A billing run that had a shard left PENDING by a dead worker: the stale-run bound
# the soak sets (chaos.STALE_RUN_SECONDS), a reschedule and the shard's work, with room.
PENDING_PATIENCE_SECONDS = 420.0
HTTP_PATIENCE_SECONDS = 300.0
# A request whose triggered run died with serve: billed within this after the kill (or
# serve's last start since), or it is stranded (the stale-run bound, serve's rescue,
# the crashed-runs automation's 95 s, the client's backoff and the work, with room).
STRANDED_SECONDS = 300.0
# The client's backoff between its repeated POSTs while the request is not billed.
REPOST_FIRST_SECONDS = 10.0
REPOST_MAX_SECONDS = 60.0
# How long a fault waits for its moment (a run to be Pending) before it gives up.
MOMENT_SECONDS = 90.0
POLL_SECONDS = 0.1
SHARD_DEPLOYMENT = "billing-shard"


class Triggers:
    def __init__(self, workdir: Path, processes: Processes, journal: Journal, token: str) -> None:
        self.files = workdir / "submitted"
        self.files.mkdir(exist_ok=True)
        self.processes = processes
        self.journal = journal
        self._token = token
        # Set by the driver: whether our ledger shows the request sent (or beyond).
        self.billed: Callable[[str], bool] = lambda request_id: False
        self._armed: set[str] = set()
        self._lock = threading.Lock()
        self._batches: dict[str, bool] = {}  # billing runs in flight → hit by a worker kill

    # --- the armed faults --------------------------------------------------------

    def arm(self, kind: str) -> None:
        """The next submission that can carry fault `kind` carries it."""
        with self._lock:
            self._armed.add(kind)

    def _take(self, kind: str) -> bool:
        with self._lock:
            if kind in self._armed:
                self._armed.discard(kind)
                return True
            return False

    @property
    def _prefect(self) -> str:
        return self.processes.env["PREFECT_API_URL"]

    def _kill_serve_at_start(self, request: dict[str, Any], flow_run_id: str) -> None:
        """SIGKILL serve once its runner is starting the run (Pending; or Running when
        it was quicker than us), let the supervisor restart it, POST the same request
        again until it is billed, and journal whether it is within STRANDED_SECONDS."""
        deadline = time.monotonic() + MOMENT_SECONDS
        state = prefect_api.run_state(self._prefect, flow_run_id)
        while state in (None, "SCHEDULED") and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            state = prefect_api.run_state(self._prefect, flow_run_id)
        serve = self.processes.serve
        if serve is None or not serve.alive or self.processes.closing:
            return
        self.processes.kill(serve, why="serve_kill_at_start")
        rid = request["request_id"]
        self.journal.note(
            "serve_killed_at_start", request_id=rid, flow_run_id=flow_run_id, state=state
        )
        self.processes.keep_up()  # the supervisor brings serve back
        # A client that does not see its request billed POSTs it again, as documented,
        # with backoff, until it is billed or STRANDED_SECONDS have passed: one early
        # POST proves nothing (a run Pending for less than the bound is alive).
        started = time.monotonic()
        statuses: list[int] = []
        runs: list[str] = []
        wait = REPOST_FIRST_SECONDS
        next_post = started
        billed = self.billed(rid)
        while not billed and time.monotonic() - self._since_serve_up(started) < STRANDED_SECONDS:
            if self.processes.closing:
                break
            if time.monotonic() >= next_post:
                status, again = self._post(submitted(request))
                statuses.append(status)
                if again and again not in runs:
                    runs.append(again)
                next_post = time.monotonic() + wait
                wait = min(wait * 2, REPOST_MAX_SECONDS)
            time.sleep(1)
            billed = self.billed(rid)
        self.journal.note(
            "serve_kill_followup",
            request_id=rid,
            duplicate_status=statuses[0] if statuses else None,
            posts=len(statuses),
            statuses=statuses,
            same_run=runs in ([], [flow_run_id]),
            runs=runs,
            final_state=prefect_api.run_state(self._prefect, flow_run_id),
            billed=billed,
            seconds=round(time.monotonic() - started, 1),
            serve_up_seconds=round(time.monotonic() - self._since_serve_up(started), 1),
        )

    def _since_serve_up(self, killed: float) -> float:
        """When the bound starts: the kill, or serve's last start after it. The monkey's
        ordinary kills go on meanwhile (serve every ~30 s at worst); whatever is in its
        runner's hands dies with each, so the bound is on recovering once serve stays up."""
        serve = self.processes.serve
        return max(killed, serve.started) if serve is not None else killed

    def _kill_workers_when_pending(self, name: str, ended: threading.Event) -> None:
        """While billing run `name` lasts: once a billing-shard run is PENDING, SIGKILL
        every worker (the one that claimed it among them) and mark the runs in flight."""
        deadline = time.monotonic() + MOMENT_SECONDS
        while not ended.is_set() and time.monotonic() < deadline and not self.processes.closing:
            pending = prefect_api.runs_in(self._prefect, SHARD_DEPLOYMENT, ("PENDING",))
            if pending:
                with self._lock:
                    for batch in self._batches:
                        self._batches[batch] = True
                    hit = sorted(self._batches)
                killed = self.processes.kill_workers(why="worker_kill_pending")
                self.journal.note(
                    "workers_killed_shard_pending",
                    batch=name,
                    workers=killed,
                    flow_run_ids=[str(run.get("id")) for run in pending],
                    batches_in_flight=hit,
                )
                self.processes.keep_up()  # the supervisor brings the workers back
                return
            time.sleep(POLL_SECONDS)
        self.arm("worker_kill_pending")  # no shard was Pending in time: the next run

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
        ended = threading.Event()
        # Only a sharded run starts billing-shard runs (one shard bills in-process).
        if shards > 1 and self._take("worker_kill_pending"):
            watcher = threading.Thread(
                target=self._kill_workers_when_pending, args=(name, ended), daemon=True
            )
            watcher.start()
        with self._lock:
            self._batches[name] = False
        try:
            return self._run("batch", name, "batch", str(path), "--shards", str(shards))
        finally:
            ended.set()
            with self._lock:
                self._batches.pop(name, None)

    def _run(self, target: str, name: str, *args: str) -> int:
        code = -1
        for attempt in range(RERUNS_AFTER_KILL + 1):
            if self.processes.closing:
                break
            if attempt:
                self.journal.note("restart", target=target, name=name)
            proc = self.processes.run(target, name, *args)
            overdue = False
            while True:
                try:
                    code = proc.process.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    if proc.age > self._patience(name):
                        self.processes.kill(proc, why="overdue")
                        code, overdue = proc.process.wait(), True
                        break
            if target == "batch":
                with self._lock:
                    hit = self._batches.get(name, False)
                self.journal.note(
                    "batch_end", name=name, exit_code=code, overdue=overdue, worker_kill=hit
                )
            if code >= 0:  # ended by itself, not killed
                return code
        return code

    def _patience(self, name: str) -> float:
        with self._lock:
            hit = self._batches.get(name, False)
        return PENDING_PATIENCE_SECONDS if hit else RUN_PATIENCE_SECONDS

    def http(self, request: dict[str, Any], document: dict[str, Any] | None = None) -> int:
        """POST /invoices; its HTTP status. Retried while serve is down or restarting
        (connection refused, 503): safe, the run is keyed by request_id."""
        status, flow_run_id = self._post(document or submitted(request))
        armed = status == 202 and document is None and flow_run_id is not None
        if armed and flow_run_id and self._take("serve_kill_at_start"):
            self._kill_serve_at_start(request, flow_run_id)
        return status

    def _post(self, document: dict[str, Any]) -> tuple[int, str | None]:
        """The status and the flow run id of a POST /invoices, retried as `http` says."""
        deadline = time.monotonic() + HTTP_PATIENCE_SECONDS
        while True:
            try:
                response = httpx.post(
                    f"{self.processes.serve_url}/invoices",
                    json=document,
                    headers={"Authorization": f"Bearer {self._token}"},
                    timeout=60,
                )
                status = response.status_code
                if status != 503:
                    return status, _flow_run_id(response)
            except httpx.HTTPError:
                status = 0
            if time.monotonic() > deadline or self.processes.closing:
                return status, None
            time.sleep(1)


def _flow_run_id(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    run = body.get("flow_run_id") if isinstance(body, dict) else None
    return str(run) if run else None
