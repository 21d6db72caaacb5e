"""The two questions the soak asks Prefect's REST API while it injects faults: where one
flow run stands, and which runs of a deployment are in a state right now.

Plain HTTP (no Prefect client in the harness): the harness must not share Prefect's
settings or event loop with what it watches, and an unreachable server is an answer
("unknown"), never a crash of the soak.
"""

from __future__ import annotations

from typing import Any

import httpx

TIMEOUT_SECONDS = 10.0


def run_state(api_url: str, flow_run_id: str) -> str | None:
    """The run's state type (SCHEDULED, PENDING, RUNNING, COMPLETED, ...); None if unknown."""
    try:
        response = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=TIMEOUT_SECONDS)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    state = response.json().get("state_type")
    return str(state) if state else None


def runs_in(api_url: str, deployment: str, states: tuple[str, ...]) -> list[dict[str, Any]]:
    """The runs of `deployment` whose state is one of `states` (empty when unknown)."""
    body = {
        "flow_runs": {"state": {"type": {"any_": list(states)}}},
        "deployments": {"name": {"any_": [deployment]}},
        "limit": 50,
    }
    try:
        response = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=TIMEOUT_SECONDS)
    except httpx.HTTPError:
        return []
    if response.status_code != 200:
        return []
    found: list[dict[str, Any]] = response.json()
    return found
