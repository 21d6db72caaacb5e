"""The webhook receiver keeps working while Prefect is down; the settle run
follows, exactly once, when Prefect is back.

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

# What the sweeper logs when a round could not start a settle run (once per outage).
SWEEP_FAILED = "the events wait in the inbox"


def _settle_runs(name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return list(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            )
        )


def _log_since(log: Path, offset: int) -> str:
    return log.read_bytes()[offset:].decode(errors="replace")


def test_a_payment_while_prefect_is_down_is_settled_once_it_is_back(
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
        _wait_final(posted.json()["flow_run_id"], service)
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
        # the outage began is a round that tried to start this event's settle run
        # against the stopped server, and ended: it must not have claimed the event.
        wait_for(
            lambda: SWEEP_FAILED in _log_since(service.log, logged_before_outage),
            "a sweeper round to fail against the stopped Prefect server",
            timeout=RUN_TIMEOUT,
        )
        assert inbox.get(engine, event.event_id).settle_started_at is None, (  # type: ignore[union-attr]
            "the sweeper claimed the event although no settle run could be started"
        )
        assert service.process.poll() is None, service.output()

        stack.enter_context(local_prefect_server(home=home, port=port))
        name = f"settle-{event.event_id}"
        [run] = wait_for(lambda: _settle_runs(name), f"the settle run {name}", timeout=RUN_TIMEOUT)
        _wait_final(str(run.id), service)
        assert len(_settle_runs(name)) == 1
        assert inbox.get(engine, event.event_id).settle_started_at is not None  # type: ignore[union-attr]
        assert "settle sweeper: Prefect answers again; caught up" in service.output()

        # Stop serve while its Prefect server is still up (the stack would stop it after).
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=60) == 0, service.output()
