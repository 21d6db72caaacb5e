"""End the flow run still waiting in the Prefect UI for a run the CLI has just decided.

A served held run waits Suspended for its approve/reject form (`flows/approval.py`).
Decided with `invoiceflow approve` / `reject` instead, it would stay Suspended until
its timeout (and the reminder automation could still fire), asking for a decision
already made. The waiting flow run is found by the held run id it keeps as its own
flow run input (`HELD_RUN_KEY`) and set Cancelled, its message saying who decided.

Prefect is not the ledger: the decision stands whatever happens here. Without a
configured API (no PREFECT_API_URL) there is no served run to end; an unreachable
one costs one line saying the waiting run could not be ended.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

# The flow run input that remembers which billing run a held flow run is waiting for.
HELD_RUN_KEY = "invoiceflow-held-run"
BILLING_RUN_FLOW = "billing-run"


def end_waiting_runs(run_id: str, verb: str, by: str) -> list[str]:
    """Cancel the flow runs suspended for `run_id`'s form; one line for each ended, or
    one line saying they could not be ended. Nothing when no Prefect API is configured."""
    from prefect.settings import get_current_settings

    from invoiceflow.prefect_reach import require_reachable, shown

    api_url = get_current_settings().api.url
    if not api_url:
        return []
    why = f"{verb} from the CLI by {by}"
    try:
        require_reachable(api_url)
        return [
            f"flow run {name} waiting in Prefect for billing run {run_id}: cancelled ({why})"
            for name in _cancel_waiting(run_id, why)
        ]
    except Exception as exc:  # the decision is made and stands; only Prefect's view is stale
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return [
            f"the flow run waiting in Prefect for billing run {run_id} could not be ended "
            f"({reason[:200]}, at {shown(api_url)}); cancel it in the Prefect UI"
        ]


def _cancel_waiting(run_id: str, why: str) -> Iterator[str]:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        for flow_run_id, name in _suspended_billing_runs(client):
            if _held_run(client, flow_run_id) != run_id:
                continue
            client.set_flow_run_state(flow_run_id, Cancelled(message=why), force=True)
            yield name


def _suspended_billing_runs(client: SyncPrefectClient) -> list[tuple[UUID, str]]:
    """Billing runs paused or suspended (Prefect's PAUSED type covers both)."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[BILLING_RUN_FLOW])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
        ),
    )
    return [(run.id, run.name) for run in runs]


def _held_run(client: SyncPrefectClient, flow_run_id: UUID) -> str | None:
    """The billing run a suspended flow run holds; None for one that never held (yet)."""
    import httpx

    try:
        raw = client.read_flow_run_input(flow_run_id, HELD_RUN_KEY)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None
        raise
    value = json.loads(raw)
    return value if isinstance(value, str) else None
