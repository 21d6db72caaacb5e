"""The webhook receiver keeps working while Prefect is down; the payment's ending
is told in the Prefect UI (the invoice run turns `Paid`) once Prefect is back.

Its own Prefect server, stopped and started again on the same port and home
(its database kept), under a real `invoiceflow serve` that stays up throughout.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any

import pytest

from invoiceflow_testing.local_prefect import _free_port, local_prefect_server
from tests.helpers import invoices_for, make_request, wait_for
from tests.test_service import RUN_TIMEOUT, _running_service, _unique, _wait_final

pytestmark = [pytest.mark.slow, pytest.mark.heavy]  # its own Prefect server, stopped

# What the sweeper logs when a round could not tell an ending (once per outage).
SWEEP_FAILED = "the events wait in the inbox"


def _run_state_name(run_id: str) -> str | None:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(run_id)).state_name


def _log_since(log: Path, offset: int) -> str:
    return log.read_bytes()[offset:].decode(errors="replace")


def test_a_payment_while_prefect_is_down_is_told_once_it_is_back(
    prefect_api: str, sandbox_server: Any, tmp_path: Path
) -> None:
    # Prefect fixes its settings at first import: import it while the session's
    # server is exported (prefect_api), so later tests still talk to that one.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from invoiceflow import ledger
    from invoiceflow.db.engine import get_engine
    from invoiceflow.db.models import RecoveryPoint
    from invoiceflow.webhooks import inbox

    home, port = tmp_path / "prefect-home", _free_port()
    home.mkdir()
    with contextlib.ExitStack() as stack:
        first = contextlib.ExitStack()
        server = first.enter_context(local_prefect_server(home=home, port=port))
        stack.enter_context(temporary_settings({PREFECT_API_URL: server.api_url}))
        service = stack.enter_context(
            _running_service(server.api_url, sandbox_server.url, tmp_path)
        )

        request_id, customer = _unique("outage")
        posted = service.post(make_request(request_id, customer).model_dump(mode="json"))
        assert posted.status_code == 202, posted.text
        run_id = posted.json()["flow_run_id"]
        _wait_final(run_id, service)
        [invoice] = invoices_for(service.stripe, request_id)

        logged_before_outage = len(service.log.read_bytes())
        first.close()  # Prefect is down; serve stays up
        assert service.process.poll() is None, service.output()
        service.stripe.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})

        engine = get_engine(f"sqlite:///{tmp_path / 'invoiceflow.db'}")
        wait_for(
            lambda: ledger.require(engine, request_id).point is RecoveryPoint.PAID,
            "the receiver to record the payment without Prefect",
        )
        [event] = [e for e in inbox.events_for(engine, request_id) if e.type == "invoice.paid"]
        # The sweeper calls Prefect only for a pending event, so its failure line after
        # the outage began is a round that tried to tell this event's ending
        # against the stopped server, and ended: it must not have claimed the event.
        wait_for(
            lambda: SWEEP_FAILED in _log_since(service.log, logged_before_outage),
            "a sweeper round to fail against the stopped Prefect server",
            timeout=RUN_TIMEOUT,
        )
        assert inbox.get(engine, event.event_id).settle_started_at is None, (  # type: ignore[union-attr]
            "the sweeper marked the event told although Prefect was down"
        )
        assert service.process.poll() is None, service.output()

        stack.enter_context(local_prefect_server(home=home, port=port))
        wait_for(
            lambda: _run_state_name(run_id) == "Paid",
            "the invoice run to say Paid",
            timeout=RUN_TIMEOUT,
        )
        wait_for(  # marked told once the telling is done, just after
            lambda: inbox.get(engine, event.event_id).settle_started_at is not None,  # type: ignore[union-attr]
            "the event to be marked told",
            timeout=30,
        )
        assert "settle sweeper: Prefect answers again; caught up" in service.output()

        # Stop serve while its Prefect server is still up (the stack would stop it after).
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=60) == 0, service.output()
