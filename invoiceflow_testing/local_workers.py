"""A throwaway multi-worker topology, for tests and benchmarks of sharded billing runs.

    Prefect server (its own PostgreSQL database) ─ work pool `invoiceflow` (process)
      ├─ deployments from deployments/prefect.yaml (`prefect deploy`)
      ├─ the crashed-runs automation (`invoiceflow automations`)
      └─ N x `prefect worker start --pool invoiceflow`, each with the app's environment

Exactly the multi-host path of docs/service.md, on one machine. The server runs on
PostgreSQL because Prefect's SQLite server answers 503 "database is locked"
at about eight concurrent flow runs. Everything is stopped and dropped
afterwards. Starting takes a while (server migrations, `prefect deploy`);
each stage says so on stderr.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from invoiceflow.batch.shards import WORK_POOL
from invoiceflow_testing.local_prefect import LocalPrefectServer, local_prefect_server

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
DEFAULT_POSTGRES_ADMIN_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
# How long the workers may take to report to the server: each imports Prefect
# (~10 s idle), which takes several times that at load 15.
WORKERS_ONLINE_TIMEOUT_SECONDS = 300
# How often a worker asks for runs (Prefect's default, 10 s, delays every shard).
WORKER_POLL_SECONDS = "1"
# `prefect deploy` and friends import all of Prefect: slow on a busy machine.
CLI_TIMEOUT_SECONDS = 600


def say(message: str) -> None:
    sys.stderr.write(f"… {message}\n")
    sys.stderr.flush()


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> list[int]:
        """SIGKILL the worker and every process under it (its flow runs run in sessions of
        their own): a lost machine. The pids killed."""
        pids = [self.process.pid, *_descendants(self.process.pid)]
        _kill(pids)
        self.process.wait()
        return pids


@dataclass
class LocalWorkers:
    server: LocalPrefectServer
    env: dict[str, str]  # what each worker sees (the app's environment, PREFECT_API_URL)
    # Flow runs each worker takes at once. One: N shards land on N workers (an idle
    # worker does not race a busy one for the second shard), as on N machines.
    runs_per_worker: int = 1
    workers: list[Worker] = field(default_factory=list)
    # Where each worker's log goes (default: the server's home, removed with it).
    log_dir: Path | None = None
    # The server's PostgreSQL database (asyncpg URL), e.g. to inspect it afterwards.
    database_url: str = ""

    @property
    def api_url(self) -> str:
        return self.server.api_url

    def start_worker(self, name: str | None = None) -> Worker:
        name = name or f"worker-{len(self.workers) + 1}"
        log_path = (self.log_dir or self.server.home) / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 (our interpreter, fixed arguments)
                [
                    *(sys.executable, "-m", "prefect", "worker", "start"),
                    *("--pool", WORK_POOL, "--name", name, "--type", "process"),
                    *("--limit", str(self.runs_per_worker)),
                ],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the caller is ours to pass on
            )
        worker = Worker(name, process, log_path)
        self.workers.append(worker)
        return worker

    def wait_online(self, names: list[str]) -> None:
        """Until each named worker has reported to the server (its first heartbeat)."""
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + WORKERS_ONLINE_TIMEOUT_SECONDS
        next_note = time.monotonic() + 10
        while True:
            with get_client(sync_client=True) as client:
                online = {w.name for w in client.read_workers_for_work_pool(WORK_POOL)}
            missing = [name for name in names if name not in online]
            if not missing:
                return
            for worker in self.workers:
                if worker.name in missing and worker.process.poll() is not None:
                    raise RuntimeError(f"{worker.name} exited; see {worker.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {missing} did not come online; see their logs")
            if time.monotonic() >= next_note:
                next_note = time.monotonic() + 10
                say(f"waiting for {', '.join(missing)} to come online")
            time.sleep(0.5)

    def stop_workers(self) -> None:
        # Flow runs still going (a test that failed midway) go with their worker.
        leftovers = [pid for w in self.workers for pid in _descendants(w.process.pid)]
        for worker in self.workers:
            if worker.process.poll() is None:
                os.killpg(worker.process.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
        _kill(leftovers)


@contextmanager
def local_workers(
    workers: int,
    app_env: dict[str, str],
    *,
    deployments: tuple[str, ...] = ("billing-shard",),
    runs_per_worker: int = 1,
    postgres_admin_url: str = DEFAULT_POSTGRES_ADMIN_URL,
    log_dir: Path | None = None,
    keep_database: bool = False,
) -> Iterator[LocalWorkers]:
    """A Prefect server on a fresh PostgreSQL database, the `invoiceflow` process work
    pool, `deployments` registered from deployments/prefect.yaml, the crashed-runs
    automation, and `workers` workers running with `app_env`. Exports PREFECT_API_URL
    in this process while it lasts. The workers log into `log_dir` when given; the
    database outlives it with `keep_database` (for inspection)."""
    with ExitStack() as stack:
        database = stack.enter_context(prefect_database(postgres_admin_url, keep_database))
        say("starting a Prefect server on PostgreSQL (first start migrates it: ~20-60 s)")
        server = stack.enter_context(
            local_prefect_server(
                PREFECT_API_DATABASE_CONNECTION_URL=database,
                # Nothing but what we start: no cron runs (reconcile at :30) mid-benchmark.
                PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
            )
        )
        say(f"Prefect server up at {server.api_url} in {server.started_in_seconds:.0f} s")
        stack.enter_context(_this_process_uses(server.api_url))
        env = {
            **os.environ,
            **app_env,
            "PREFECT_API_URL": server.api_url,
            "PREFECT_WORKER_QUERY_SECONDS": WORKER_POLL_SECONDS,
            "PREFECT_WORKER_PREFETCH_SECONDS": "0",
        }
        say(f"creating the process work pool {WORK_POOL!r}")
        _prefect_cli(env, "work-pool", "create", WORK_POOL, "--type", "process")
        say(f"registering {', '.join(deployments)} from {PREFECT_FILE.relative_to(REPO)}")
        names = [arg for name in deployments for arg in ("--name", name)]
        _prefect_cli(env, "--no-prompt", "deploy", *names, "--prefect-file", str(PREFECT_FILE))
        say("creating the crashed-runs automation")
        _run(env, [sys.executable, "-m", "invoiceflow", "automations"])
        topology = LocalWorkers(
            server, env, runs_per_worker=runs_per_worker, log_dir=log_dir, database_url=database
        )
        stack.callback(topology.stop_workers)
        for _ in range(workers):
            topology.start_worker()
        say(f"starting {workers} workers")
        topology.wait_online([w.name for w in topology.workers])
        say(f"{workers} workers online")
        yield topology


@contextmanager
def prefect_database(admin_url: str, keep: bool = False) -> Iterator[str]:
    """A fresh PostgreSQL database for the Prefect server (asyncpg URL), dropped
    afterwards unless `keep`."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"invoiceflow_prefect_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def _this_process_uses(api_url: str) -> Iterator[None]:
    """Prefect's settings in this process follow PREFECT_API_URL (exported by the server)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        yield


def _prefect_cli(env: dict[str, str], *args: str) -> None:
    _run(env, [sys.executable, "-m", "prefect", *args])


def _run(env: dict[str, str], command: list[str]) -> None:
    done = subprocess.run(  # noqa: S603 (our interpreter, fixed arguments)
        command,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed:\n{done.stdout}{done.stderr}")


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):  # gone already
            os.kill(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
