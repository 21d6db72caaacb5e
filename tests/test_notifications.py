"""`invoiceflow automations` installs the automations that notify INVOICEFLOW_NOTIFY_BLOCK.

The default tier checks what is installed on the session's Prefect server (a Webhook
block's automations: what each watches, that a second run changes nothing, that unset
removes them, a missing block's one-line error). The heavy test lets the server's
triggers fire them at a local HTTP receiver: a billing run that ends Failed, and a held
run suspended longer than INVOICEFLOW_APPROVAL_REMIND_HOURS.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client

from invoiceflow.runtime import reset_runtime
from invoiceflow.service.notify import (
    APPROVAL_WAITING_AUTOMATION,
    FAILED_RUN_AUTOMATION,
    NOTIFICATIONS,
)
from tests.helpers import make_request, wait_for
from tests.inprocess_cli import Invoke, configured_cli

pytestmark = pytest.mark.usefixtures("prefect_api")


class Receiver:
    """A local HTTP endpoint that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [body for body in self.bodies if body.get("kind") == kind]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()


@pytest.fixture
def webhook_block(receiver: Receiver) -> str:
    name = f"notify-{uuid.uuid4().hex[:8]}"
    Webhook(url=receiver.url, method="POST").save(name)
    return f"webhook/{name}"


def _automations() -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        async with get_client() as client:
            return {
                name: found
                for name in NOTIFICATIONS
                for found in await client.read_automations_by_name(name)
            }

    return asyncio.run(read())


def _cli(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, **env: str) -> Invoke:
    return configured_cli(monkeypatch, request, {"INVOICEFLOW_DATABASE_URL": "sqlite://", **env})


def test_automations_installs_the_notifications_once_and_removes_them_when_unset(
    webhook_block: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    cli = _cli(
        monkeypatch,
        request,
        INVOICEFLOW_NOTIFY_BLOCK=webhook_block,
        INVOICEFLOW_APPROVAL_REMIND_HOURS="36",
    )

    first = cli("automations")

    assert first.exit_code == 0, (first.stdout, first.stderr)
    assert f"notifies {webhook_block}" in first.stdout
    installed = _automations()
    assert set(installed) == set(NOTIFICATIONS)
    failed = installed[FAILED_RUN_AUTOMATION].trigger
    assert failed.expect == {"prefect.flow-run.Failed"}
    assert failed.match_related.get("prefect.resource.name") == ["billing-run"]
    waiting = installed[APPROVAL_WAITING_AUTOMATION].trigger
    assert (waiting.posture, waiting.after) == ("Proactive", {"prefect.flow-run.Suspended"})
    assert waiting.within.total_seconds() == 36 * 3600
    [action] = installed[APPROVAL_WAITING_AUTOMATION].actions
    assert action.type == "call-webhook" and "36 h for approval" in action.payload

    again = cli("automations")
    assert again.exit_code == 0
    assert {n: a.id for n, a in _automations().items()} == {n: a.id for n, a in installed.items()}

    monkeypatch.delenv("INVOICEFLOW_NOTIFY_BLOCK")
    reset_runtime()  # the settings are read afresh
    off = cli("automations")
    assert off.exit_code == 0 and "notifications: off" in off.stdout
    assert _automations() == {}


def test_a_notify_block_that_does_not_exist_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    cli = _cli(monkeypatch, request, INVOICEFLOW_NOTIFY_BLOCK="webhook/no-such-block")

    result = cli("automations")

    assert result.exit_code == 2
    assert result.stderr.strip().startswith(
        "error: INVOICEFLOW_NOTIFY_BLOCK: no webhook block named 'no-such-block'"
    ), result.stderr


@pytest.mark.heavy  # the Prefect server's triggers and actions services fire them
@pytest.mark.usefixtures("configured")
def test_a_failed_billing_run_and_a_held_run_waiting_too_long_are_told_to_the_webhook(
    receiver: Receiver,
    webhook_block: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    from flows.billing_run import run_billing
    from tests.test_approval_served import _deployment_run, _source, _suspended

    env = {"INVOICEFLOW_NOTIFY_BLOCK": webhook_block, "INVOICEFLOW_APPROVAL_REMIND_HOURS": "0.003"}
    cli = configured_cli(monkeypatch, request, {**request.getfixturevalue("configured"), **env})
    request.addfinalizer(lambda: _remove_notifications(monkeypatch))
    assert cli("automations").exit_code == 0

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"request_id": "no-customer"}\n')
    assert not run_billing(str(broken)).ok  # the run ends Failed
    prefix = f"n{uuid.uuid4().hex[:6]}"
    held = [make_request(f"{prefix}-a", customer=f"{prefix}-acme")]
    flow_run_id = asyncio.run(_deployment_run(_source(tmp_path, held)))
    _suspended(flow_run_id)

    [failed] = wait_for(lambda: receiver.of_kind("billing-run-failed"), "the failed-run notice")
    assert failed["flow_run"] == "billing-run-broken.jsonl"
    assert failed["text"].endswith("ended Failed: 1 of 1 requests failed (no-customer)")
    [waiting] = wait_for(lambda: receiver.of_kind("approval-waiting"), "the reminder", 120)
    assert waiting["flow_run_id"] == str(flow_run_id)
    assert "for approval" in waiting["text"] and "invoiceflow approve RUN" in waiting["text"]


def _remove_notifications(monkeypatch: pytest.MonkeyPatch) -> None:
    from invoiceflow.service.notify import ensure_notifications
    from invoiceflow.settings import Settings

    monkeypatch.delenv("INVOICEFLOW_NOTIFY_BLOCK", raising=False)
    asyncio.run(ensure_notifications(Settings()))
