"""The cycle crons are checked by the parser that runs them: Prefect's.

Settings used to validate with cronsim while Prefect's scheduler runs its own
croniter: `@monthly` was refused here but runs in Prefect, and `0 6 31 2 *` (the
31st of February) passes Prefect's validator but its scheduler never finds a
date for it. Now a setting passes exactly when Prefect would schedule it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from invoiceflow.settings import Settings, SettingsError, load_settings

CRONS = ("INVOICEFLOW_BILLING_CRON", "INVOICEFLOW_DUNNING_CRON", "INVOICEFLOW_RECONCILE_CRON")


def _next_runs(expression: str, timezone: str = "UTC", n: int = 2) -> list[datetime]:
    """The dates the Prefect server's scheduler would create runs for."""
    from prefect.server.schemas.schedules import CronSchedule

    schedule = CronSchedule(cron=expression, timezone=timezone)
    start = datetime(2026, 1, 15, tzinfo=UTC)
    return list(asyncio.run(schedule.get_dates(n=n, start=start)))


@pytest.mark.parametrize("variable", CRONS)
def test_monthly_runs_in_prefect_so_the_settings_take_it(
    clean_env: pytest.MonkeyPatch, variable: str
) -> None:
    clean_env.setenv(variable, "@monthly")
    settings = load_settings()
    assert getattr(settings, variable.removeprefix("INVOICEFLOW_").lower()) == "@monthly"
    assert [d.day for d in _next_runs("@monthly", "Europe/Berlin")] == [1, 1]


def test_the_31st_of_february_never_fires_so_it_is_refused_in_one_line(
    clean_env: pytest.MonkeyPatch,
) -> None:
    from prefect._vendor.croniter import CroniterBadDateError

    with pytest.raises(CroniterBadDateError):  # Prefect's scheduler: no date, ever
        _next_runs("0 6 31 2 *")
    clean_env.setenv("INVOICEFLOW_BILLING_CRON", "0 6 31 2 *")

    with pytest.raises(SettingsError) as refused:
        load_settings()

    assert str(refused.value).splitlines() == [
        "INVOICEFLOW_BILLING_CRON '0 6 31 2 *' never fires (no such date); use e.g. "
        "'0 6 1 * *' (06:00 on the 1st), '@monthly', or 'off' for no schedule"
    ]


@pytest.mark.parametrize(
    ("expression", "accepted"),
    [
        ("@monthly", True),
        ("@daily", True),
        ("@yearly", True),
        ("0 6 L * *", True),  # the last day of each month
        ("0 6 * * 1#2", True),  # the second Monday
        ("0 6 * * MON", True),
        ("0 6 29 2 *", True),  # leap years only, but it fires
        ("0 6 31 2,3 *", True),  # 31 March
        ("0 6 31 4,6 *", False),  # neither April nor June has a 31st
        ("0 6 30 2 *", False),
        ("61 * * * *", False),
        ("0 6 1W * *", False),
        ("H 6 * * *", False),  # Prefect refuses hashed expressions
        ("@reboot", False),
        ("0 6 1 *", False),
        ("0 0 6 1 * *", False),  # Quartz-style: Prefect would read the 6th field as seconds
    ],
)
def test_the_settings_agree_with_prefects_scheduler(
    clean_env: pytest.MonkeyPatch, expression: str, accepted: bool
) -> None:
    clean_env.setenv("INVOICEFLOW_DUNNING_CRON", expression)
    try:
        load_settings()
        taken = True
    except SettingsError as exc:
        taken = False
        assert str(exc).startswith(f"INVOICEFLOW_DUNNING_CRON {expression!r} ")
        assert len(str(exc).splitlines()) == 1
    assert taken is accepted
    if accepted:
        assert _next_runs(expression)  # and Prefect's scheduler finds its dates


def test_the_defaults_skip_the_import_because_prefect_schedules_them() -> None:
    from invoiceflow import cron

    defaults = {
        Settings.model_fields[name].default
        for name in ("billing_cron", "dunning_cron", "reconcile_cron")
    }
    assert defaults == cron.CHECKED
    for expression in defaults:
        assert _next_runs(expression)


def test_a_bad_cron_on_the_command_line_is_one_line_and_exit_2(
    clean_env: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    from invoiceflow.cli import app

    clean_env.setenv("INVOICEFLOW_DATABASE_URL", sqlite_url)
    clean_env.setenv("INVOICEFLOW_RECONCILE_CRON", "0 6 31 2 *")

    result = CliRunner().invoke(app, ["status"])

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: INVOICEFLOW_RECONCILE_CRON '0 6 31 2 *' never fires (no such date); use e.g. "
        "'0 6 1 * *' (06:00 on the 1st), '@monthly', or 'off' for no schedule"
    ]
