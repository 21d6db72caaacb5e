"""Run Prefect's runner (the deployments) and uvicorn (the HTTP app) in one loop.

Either stopping stops the other: SIGINT/SIGTERM stop both, and if one of them
fails the process does not stay half alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from uuid import UUID

import uvicorn
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp

from invoiceflow import stale_runs
from invoiceflow.batch.shards import SHARD_DEPLOYMENT
from invoiceflow.service import notify
from invoiceflow.service.automations import ensure_crashed_runs_automation
from invoiceflow.service.deployments import build_deployments
from invoiceflow.service.sweeper import last_sweep, sweep_forever

logger = logging.getLogger("invoiceflow.service")

# Flow runs this process executes at once. Each is a subprocess with a few
# threads of Stripe calls; Prefect's SQLite-backed server answers 503 at about
# eight concurrent runs, so stay well under that.
RUN_LIMIT = 4
# How often the runner asks for runs to start. Prefect's default (10 s) is a
# long wait for a POST /invoices caller; PREFECT_RUNNER_POLL_FREQUENCY overrides.
POLL_SECONDS = 2.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The signals are ours to handle (see `serve`): uvicorn's own handling
        # would re-raise them after its shutdown and kill the runner mid-stop.
        yield


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts: a taken port fails the
    command at once, in one line, not after the runner is up."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


async def serve(
    app: ASGIApp, sock: socket.socket, on_ready: Callable[[], None], engine: Engine
) -> None:
    from prefect.runner import Runner

    # pause_on_shutdown=False: a stop (a deploy, a restart) must not pause the
    # deployments' schedules nor delete their scheduled runs.
    poll = None if os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY") else POLL_SECONDS
    runner = Runner(
        name="invoiceflow", pause_on_shutdown=False, limit=RUN_LIMIT, query_seconds=poll
    )
    # Nobody waits on a run of these but this runner: serve takes their stranded
    # runs back itself. A shard is its billing run's to judge (which says so).
    ours = []
    for deployment in await build_deployments():
        deployment_id = await runner.aadd_deployment(deployment)
        if f"{deployment.flow_name}/{deployment.name}" != SHARD_DEPLOYMENT:
            ours.append(deployment_id)
    await ensure_crashed_runs_automation()  # without it, a killed run stays Running
    await notify.ensure_or_warn()  # INVOICEFLOW_NOTIFY_BLOCK's automations
    server = _Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    served = asyncio.create_task(runner.start(), name="prefect-runner")
    web = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    sweeper = asyncio.create_task(sweep_forever(engine), name="settle-sweeper")
    rescuer = asyncio.create_task(rescue_forever(ours), name="stranded-runs")

    stopping: list[asyncio.Task[None]] = []  # held, so the stop is not garbage-collected

    def stop() -> None:
        server.should_exit = True
        sweeper.cancel()
        rescuer.cancel()
        if runner.started and not runner.stopping:
            runner.stopping = True
            stopping.append(asyncio.create_task(runner.astop()))
        elif not runner.started:
            served.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Runner.start installs its own SIGTERM handler too; `stop` tolerates both.
        loop.add_signal_handler(signum, stop)
    try:
        while not (server.started or web.done()):
            await asyncio.sleep(0.05)
        if server.started:
            on_ready()
        done, _ = await asyncio.wait({served, web}, return_when=asyncio.FIRST_COMPLETED)
        stop()
        await asyncio.gather(served, web, sweeper, rescuer, *stopping, return_exceptions=True)
        await last_sweep(engine)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def rescue_forever(deployment_ids: list[UUID]) -> None:
    """Take back this runner's runs stranded Pending by a killed `serve` (ours before a
    restart: nobody else would, and a Pending run is never picked up again); see
    `stale_runs.rescue`. An unreachable Prefect only delays it, said once."""
    from prefect.client.orchestration import get_client

    def once() -> list[tuple[UUID, str]]:
        with get_client(sync_client=True) as client:
            return stale_runs.rescue(client, deployment_ids)

    failing = False
    while True:
        try:
            for run_id, reason in await asyncio.to_thread(once):
                logger.warning("flow run %s %s; marked Crashed and scheduled again", run_id, reason)
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:
                logger.warning("stranded-run rescue: %s; trying again", type(exc).__name__)
            failing = True
        await asyncio.sleep(stale_runs.rescue_every(stale_runs.bound()))
