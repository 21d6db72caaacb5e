"""A flow run whose process is SIGKILLed ends `Crashed` on the server, through
the automation `invoiceflow serve` / `invoiceflow automations` ships.

A dedicated Prefect server: the test shortens the automation's window, which on
the session's server would mark other tests' live runs Crashed. Slow by nature:
the server judges a window only after it has passed (here 40 s, just above one
30 s heartbeat), plus its 5 s proactive evaluation period. Heavy tier; the
automation's spec itself is checked in process, without a server.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from invoiceflow.service.automations import (
    CRASHED_RUNS_AUTOMATION,
    OUR_FLOWS,
    crashed_runs_automation,
    ensure_crashed_runs_automation,
)
from invoiceflow_testing.local_prefect import local_prefect_server
from tests.conftest import app_env, run_cli
from tests.helpers import crash_cli_at, make_request, wait_for

WINDOW = timedelta(seconds=40)


def test_the_automation_marks_a_silent_run_of_ours_crashed_and_a_finished_one_never() -> None:
    """The spec the server gets: per flow run of our flows, a window opened by
    Running or a heartbeat, closed by the next heartbeat or any final state
    (`AwaitingPayment`, `PaymentPending`, `Paid`, `Void`, `Uncollectible` are our
    Completed), else
    Crashed with a reason."""
    from prefect.automations import EventTrigger, Posture
    from prefect.client.schemas.objects import StateType

    automation = crashed_runs_automation(timedelta(seconds=90))

    assert automation.name == CRASHED_RUNS_AUTOMATION and automation.enabled
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.posture is Posture.Proactive and trigger.threshold == 1
    assert trigger.within == timedelta(seconds=90)
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.after == {"prefect.flow-run.Running", "prefect.flow-run.heartbeat"}
    assert {
        "prefect.flow-run.heartbeat",
        "prefect.flow-run.Completed",
        "prefect.flow-run.AwaitingPayment",
        "prefect.flow-run.PaymentPending",  # a payment of its invoice processing
        "prefect.flow-run.Paid",  # an invoice run of a request already settled
        "prefect.flow-run.Void",
        "prefect.flow-run.Uncollectible",
        "prefect.flow-run.Failed",
        "prefect.flow-run.Cancelled",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.Suspended",  # a held run waiting for its approval form
        "prefect.flow-run.Paused",
    } == trigger.expect
    related = trigger.match_related
    assert not isinstance(related, list)
    assert sorted(related["prefect.resource.name"]) == sorted(OUR_FLOWS)
    [action] = automation.actions
    assert action.type == "change-flow-run-state"
    assert action.state is StateType.CRASHED
    assert action.message == "no heartbeat for 90 s: the process running it died"


async def _automations() -> list[Any]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_automations_by_name(CRASHED_RUNS_AUTOMATION)


async def _invoice_runs() -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async with get_client() as client:
        return await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["invoice"]))
        )


@pytest.mark.slow
@pytest.mark.heavy  # a Prefect server of its own, a killed process, a window to wait out
def test_a_killed_run_ends_crashed(
    prefect_api: str, sandbox: Any, sqlite_url: str, tmp_path: Path
) -> None:
    # Prefect fixes its settings at first import: import it while the session's
    # server is exported (prefect_api), so later tests still talk to that one.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with local_prefect_server() as server, temporary_settings({PREFECT_API_URL: server.api_url}):
        env = app_env(sandbox.url, sqlite_url, PREFECT_API_URL=server.api_url)
        done = run_cli("automations", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "runs silent 90 s → Crashed" in done.stdout  # 3 heartbeats of our 30 s
        # Again, with the test's short window: updated in place, still one.
        automation_id = asyncio.run(ensure_crashed_runs_automation(WINDOW))
        [automation] = asyncio.run(_automations())
        assert automation.id == automation_id
        assert automation.trigger.within == WINDOW

        # A run that ends normally stops beating too; it must stay as it ended.
        finished = make_request("finishes-normally", "normal")
        request_file = tmp_path / "finished.json"
        request_file.write_text(json.dumps(finished.model_dump(mode="json")))
        done = run_cli("invoice", str(request_file), "--no-wait", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        [finished_run] = asyncio.run(_invoice_runs())

        crash_cli_at(
            sandbox,
            make_request("crash-detected"),
            "^/v1/invoices$",
            "stall_before_write",
            env,
            tmp_path,
        )
        killed_at = time.monotonic()
        [run] = [r for r in asyncio.run(_invoice_runs()) if r.id != finished_run.id]
        assert run.state.is_running(), run.state

        def crashed() -> Any:
            [now] = [r for r in asyncio.run(_invoice_runs()) if r.id == run.id]
            return now if now.state.is_crashed() else None

        run = wait_for(crashed, "the killed run to be marked Crashed", timeout=120)
        took = time.monotonic() - killed_at
        print(f"crash detected {took:.0f} s after the kill (window {WINDOW.seconds} s)")
        assert run.state.message == "no heartbeat for 40 s: the process running it died"
        assert took < WINDOW.seconds + 60, took
        [still] = [r for r in asyncio.run(_invoice_runs()) if r.id == finished_run.id]
        assert still.state.name == finished_run.state.name == "AwaitingPayment", still.state
