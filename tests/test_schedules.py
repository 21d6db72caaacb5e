"""The billing cycle's cron schedules fire under a real Prefect server's scheduler.

A server of its own, with the scheduler looking every second (Prefect's default
is a minute), serves `invoiceflow serve`'s deployments: the reconcile deployment
on `* * * * *` runs by itself within a minute or two, and the billing run's
`0 6 1 * *` in Europe/Berlin is scheduled for 06:00 Berlin time on the 1st.
That is the heavy tier. The default tier checks the schedules as objects, in
process: what `serve` builds from the settings, and the dates Prefect's
scheduler computes from them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from invoiceflow.service.deployments import BILLING_RUN_DEPLOYMENT, RECONCILE_DEPLOYMENT
from invoiceflow_testing.local_prefect import local_prefect_server
from tests.helpers import wait_for
from tests.test_service import _running_service

BERLIN = ZoneInfo("Europe/Berlin")


def _next_date(cron: str, timezone: str) -> datetime:
    """The next date Prefect's scheduler computes for `cron` (the parser that runs it)."""
    from prefect.server.schemas.schedules import CronSchedule

    return asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(n=1))[0]


def _runs(deployment_name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name)
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )


def test_the_cycle_is_served_on_its_crons_in_the_configured_time_zone(
    clean_env: pytest.MonkeyPatch,
) -> None:
    from invoiceflow.service.deployments import build_deployments
    from invoiceflow.settings import get_settings

    clean_env.setenv("INVOICEFLOW_SCHEDULE_TIMEZONE", "Europe/Berlin")
    clean_env.setenv("INVOICEFLOW_BILLING_CRON", "0 6 1 * *")
    clean_env.setenv("INVOICEFLOW_RECONCILE_CRON", "* * * * *")
    clean_env.setenv("INVOICEFLOW_DUNNING_CRON", "off")
    get_settings.cache_clear()
    try:
        served = {d.name: d for d in asyncio.run(build_deployments())}
    finally:
        get_settings.cache_clear()

    def schedules(name: str) -> list[tuple[str, str | None, str | None]]:
        return [
            (s.schedule.cron, s.schedule.timezone, s.slug)  # type: ignore[union-attr]
            for s in served[name].schedules or []
        ]

    assert schedules("billing-run") == [("0 6 1 * *", "Europe/Berlin", "billing-cycle")]
    assert served["billing-run"].parameters == {"source": "pending", "hold": False}
    assert schedules("reconcile") == [("* * * * *", "Europe/Berlin", "reconcile")]
    assert schedules("dunning") == []  # "off": runs only when triggered
    # The date the server's scheduler makes of it: 06:00 Berlin time on the 1st.
    first = _next_date("0 6 1 * *", "Europe/Berlin").astimezone(BERLIN)
    assert (first.day, first.hour, first.minute) == (1, 6, 0)
    assert first > datetime.now(BERLIN)


@pytest.mark.slow
@pytest.mark.heavy  # a Prefect server of its own, and a minute or two of its scheduler
def test_cron_deployments_fire_under_the_servers_scheduler(sandbox: Any, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        local_prefect_server(PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1") as prefect,
        temporary_settings({PREFECT_API_URL: prefect.api_url}),
        _running_service(
            prefect.api_url,
            sandbox.url,
            tmp_path,
            INVOICEFLOW_SCHEDULE_TIMEZONE="Europe/Berlin",
            INVOICEFLOW_BILLING_CRON="0 6 1 * *",
            INVOICEFLOW_RECONCILE_CRON="* * * * *",
        ) as service,
    ):
        scheduled = wait_for(lambda: _runs(BILLING_RUN_DEPLOYMENT), "billing runs scheduled", 120)
        next_cycle = _next_date("0 6 1 * *", "Europe/Berlin")
        first = scheduled[0]
        assert first.auto_scheduled
        assert first.expected_start_time.astimezone(BERLIN) == next_cycle
        assert first.parameters == {"source": "pending", "hold": False}

        def reconciled_by_schedule() -> Any:
            runs = _runs(RECONCILE_DEPLOYMENT)
            done = [r for r in runs if r.auto_scheduled and r.state and r.state.is_completed()]
            ended = [r for r in runs if r.state and r.state.is_final()]
            failed = [r for r in ended if not r.state.is_completed()]
            assert not failed, f"{failed[0].state}: {service.output()}"
            return done

        (fired, *_) = wait_for(reconciled_by_schedule, "a scheduled reconcile run", 300)
        assert fired.expected_start_time <= datetime.now(UTC)
        assert fired.expected_start_time.second == 0  # on the minute, as cron says
        assert "schedules (Europe/Berlin): billing-run '0 6 1 * *'" in service.output()
