"""What the Prefect console shows of runs started from the CLI (issue 22, item 6):
a reconcile or dunning run is named after its day, never Prefect's random name,
read back from Prefect's API after the printed command ran (in process, on the
session's Prefect server)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.inprocess_cli import in_process_cli

pytestmark = [
    pytest.mark.usefixtures("configured", "prefect_api"),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


def _latest_run_name(flow_name: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=1,
        )
    return run.name


def test_reconcile_and_dunning_runs_are_named_after_their_day(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    run_cli = in_process_cli(monkeypatch, request)
    today = f"{datetime.now(UTC):%Y-%m-%d}"

    reconciled = run_cli("reconcile")
    assert reconciled.exit_code == 0, reconciled.stderr
    assert _latest_run_name("reconcile") == f"reconcile-{today}"

    dunned = run_cli("dunning")
    assert dunned.exit_code == 0, dunned.stderr
    assert _latest_run_name("dunning") == f"dunning-{today}"

    as_of = run_cli("dunning", "--as-of", "2027-01-15T09:00:00Z")
    assert as_of.exit_code == 0, as_of.stderr
    assert _latest_run_name("dunning") == "dunning-2027-01-15"
