"""The pipeline's processes during a soak: `invoiceflow serve`, the Prefect workers,
and the CLI runs (`invoiceflow invoice`, `invoiceflow batch`) the driver starts.

Each process incarnation logs into `logs/<name>.log` of the work directory. The
chaos monkey picks its victims from `victims()`; `kill` and `pause` act on a
process and everything below it (a run of `serve` or of a worker is a
subprocess), and say so in the journal. `keep_up` brings a killed `serve` or
worker back, as a supervisor (systemd, Kubernetes) would.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.soak.journal import Journal
from bench.stack import REPO, descendants
from invoiceflow_testing.local_workers import LocalWorkers

# A serve or worker younger than this is left alone: one killed while it starts
# would never take any work, and the soak would only measure start-ups.
MIN_SERVICE_AGE_SECONDS = 30.0
# Likewise a CLI run still importing Prefect (seconds, on a busy machine) has
# nothing in flight to lose.
MIN_RUN_AGE_SECONDS = 6.0
SERVE_READY_SECONDS = 240.0


@dataclass
class Proc:
    target: str  # cli | batch | serve | worker
    name: str
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def age(self) -> float:
        return time.monotonic() - self.started


class Processes:
    def __init__(
        self,
        logs: Path,
        env: dict[str, str],
        topology: LocalWorkers,
        serve_port: int,
        journal: Journal,
    ) -> None:
        self.logs = logs
        self.env = env
        self.topology = topology
        self.serve_port = serve_port
        self.journal = journal
        self.serve: Proc | None = None
        self._runs: list[Proc] = []
        self._workers: dict[str, Proc] = {}
        self._lock = threading.Lock()
        self._supervising = threading.Lock()  # one keep_up at a time: one serve, not two
        self._numbers = itertools.count(1)
        self.closing = False  # set at the end: nothing new starts, nothing is rerun

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"

    # --- starting --------------------------------------------------------------

    def run(self, target: str, name: str, *args: str) -> Proc:
        """`python -m invoiceflow ARGS` in the background, logging to logs/<name>-<n>.log."""
        if self.closing:
            raise RuntimeError("the soak is stopping")
        proc = Proc(target, name, self._spawn(f"{name}-{next(self._numbers)}", *args))
        with self._lock:
            self._runs = [run for run in self._runs if run.alive] + [proc]
        return proc

    def _spawn(self, log_name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{log_name}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "invoiceflow", *args],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C is ours to pass on
            )

    def start_serve(self) -> None:
        self.serve = Proc(
            "serve",
            "serve",
            self._spawn(
                f"serve-{next(self._numbers)}",
                *("serve", "--host", "127.0.0.1", "--port", str(self.serve_port)),
            ),
        )

    def serve_ready(self) -> bool:
        try:
            # Unauthorised on purpose: 401 means the HTTP app is up, and no token is sent.
            return httpx.post(f"{self.serve_url}/invoices", timeout=2).status_code == 401
        except httpx.HTTPError:
            return False

    def wait_serve(self) -> None:
        deadline = time.monotonic() + SERVE_READY_SECONDS
        while not self.serve_ready():
            if self.serve is None or not self.serve.alive:
                raise RuntimeError("invoiceflow serve exited; see its log in logs/")
            if time.monotonic() > deadline:
                raise RuntimeError("invoiceflow serve did not answer; see its log in logs/")
            time.sleep(0.5)

    def adopt_workers(self) -> None:
        for worker in self.topology.workers:
            if worker.name not in self._workers and worker.process.poll() is None:
                self._workers[worker.name] = Proc("worker", worker.name, worker.process)

    # --- what the monkey sees ----------------------------------------------------

    def victims(self, *, long_lived: bool) -> list[Proc]:
        """Living runs (CLI, batch); with `long_lived`, also serve and the workers
        once they are past their start."""
        with self._lock:
            found = [run for run in self._runs if run.alive and run.age > MIN_RUN_AGE_SECONDS]
        if long_lived:
            workers = [w for w in self._workers.values() if w.alive]
            found += [w for w in workers if w.age > MIN_SERVICE_AGE_SECONDS]
            # serve only once it answers: killed mid-start it would never take a request.
            serve = self.serve
            if serve and serve.alive and serve.age > MIN_SERVICE_AGE_SECONDS and self.serve_ready():
                found.append(serve)
        return found

    def kill(self, proc: Proc, why: str = "chaos") -> None:
        """SIGKILL the process and everything under it (a lost machine)."""
        pids = [proc.process.pid, *descendants(proc.process.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.process.wait()
        self.journal.note("kill", target=proc.target, pid=proc.process.pid, name=proc.name, why=why)

    def pause(self, proc: Proc, seconds: float) -> None:
        """SIGSTOP the process tree for `seconds` (past its lease), then SIGCONT it."""
        pids = [proc.process.pid, *descendants(proc.process.pid)]
        self._signal(pids, signal.SIGSTOP)
        self.journal.note(
            "stop", target=proc.target, pid=proc.process.pid, name=proc.name, seconds=seconds
        )
        time.sleep(seconds)
        self._signal(pids, signal.SIGCONT)

    @staticmethod
    def _signal(pids: list[int], signum: signal.Signals) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill_workers(self, why: str) -> list[str]:
        """SIGKILL every living worker (and its runs); their names."""
        killed = []
        for proc in list(self._workers.values()):
            if proc.alive:
                self.kill(proc, why=why)
                killed.append(proc.name)
        return killed

    def keep_up(self) -> None:
        """Restart serve and the workers the monkey killed (the same port, new logs)."""
        with self._supervising:
            if self.closing:
                return
            if self.serve is not None and not self.serve.alive:
                self.start_serve()
                self.journal.note("restart", target="serve", pid=self.serve.process.pid)
            for name, proc in list(self._workers.items()):
                if not proc.alive:
                    del self._workers[name]
                    worker = self.topology.start_worker()
                    self._workers[worker.name] = Proc("worker", worker.name, worker.process)
                    self.journal.note("restart", target="worker", pid=worker.process.pid)

    # --- the end ---------------------------------------------------------------

    def close(self) -> None:
        """The end (or Ctrl-C): stop every run, start and restart nothing more."""
        self.closing = True
        self.stop_runs()

    def stop_runs(self) -> None:
        with self._lock:
            runs = [run for run in self._runs if run.alive]
        for run in runs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, signal.SIGTERM)
        for run in runs:
            try:
                run.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill(run, why="did not stop")

    def stop_serve(self) -> None:
        if self.serve is None or not self.serve.alive:
            return
        children = descendants(self.serve.process.pid)
        self.serve.process.send_signal(signal.SIGTERM)
        try:
            self.serve.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.serve.process.kill()
            self.serve.process.wait()
        self._signal(children, signal.SIGKILL)  # runs it left behind
