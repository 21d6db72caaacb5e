"""The chaos soak in small (issue 10): a regression in exactly-once fails the build.

`bench/chaos.py` runs as a subprocess, the way an operator runs it: the sandbox,
a Prefect server on PostgreSQL with two workers, `invoiceflow serve` and the CLI
runs, each a process of its own, with kills, pauses past the lease, Stripe
faults and abused webhooks. A fixed seed makes the workload and the harness's
decisions the same every time; the machine's timing is not, which is the point.
The verdict is the verifier's (`bench/soak/verify.py`): the last line must say
`soak OK`, after some kills and some injected faults.

Each soak is also a secrets audit (issue 10): it runs with recognizable fake
secrets (the Stripe key, the trigger token, an extra webhook secret), keeps its
work directory and databases, and `tests/secrets_scan.py` must find no trace of
them in any log or output, in the ledger or in Prefect's database, before the
databases are dropped. (`tests/test_secrets_audit.py` audits the served stack's
other paths: a wrong key, refused calls, live keys.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_ADMIN_URL, REPO
from tests.secrets_scan import Places, Secret, recognizable, report, scan

REQUESTS = 24
KILLS = 10
SEED = 20261126
# Generous: the stack starts (~1 min on a busy machine) and the soak runs every
# request through killed processes; bounded so a hung soak fails, not the suite.
TIMEOUT_SECONDS = 1_500


def soak_secrets() -> dict[str, Secret]:
    """The harness's secrets, by the variable it reads each from."""
    return {
        "CHAOS_STRIPE_KEY": recognizable("sk_test_", "SOAKKEY"),
        "CHAOS_WEBHOOK_SECRET": recognizable("whsec_", "SOAKHOOK", ""),
        "CHAOS_TRIGGER_TOKEN": recognizable("", "SOAKTOKEN"),
    }


def run_soak(
    workdir: Path, secrets: dict[str, Secret], *extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({name: secret.value for name, secret in secrets.items()})
    command = [sys.executable, "bench/chaos.py", "--requests", str(REQUESTS)]
    command += ["--seed", str(SEED), "--kills", str(KILLS), "--workdir", str(workdir), "--keep"]
    command += extra
    return subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )


def assert_soak_ok(result: subprocess.CompletedProcess[str], workdir: Path) -> None:
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or not lines[-1].startswith("soak OK"):
        # The verdict's table and problem lines, whole: pytest would cut an assert's text.
        pytest.fail(
            f"exit {result.returncode}\n" + "\n".join(lines[-60:]) + "\n" + result.stderr[-3000:]
        )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    kills = int(re.search(r"(\d+) kills", lines[-1]).group(1))  # type: ignore[union-attr]
    faults = int(re.search(r"(\d+) faults", lines[-1]).group(1))  # type: ignore[union-attr]
    assert kills >= KILLS and faults > 0, lines[-1]
    journal = [json.loads(line) for line in (workdir / "journal.jsonl").read_text().splitlines()]
    kinds = {entry["kind"] for entry in journal}
    assert {"kill", "restart", "forged_webhook", "reconcile"} <= kinds, sorted(kinds)
    # Issue 19's kinds, each injected (and judged by the verifier) at least once.
    assert kinds >= ISSUE_19_ENTRIES, sorted(ISSUE_19_ENTRIES - kinds)
    assert any(str(e.get("how", "")).startswith("weak_") for e in journal), "no weak signature"


# What the harness journals when it injects each fault kind of issue 19.
ISSUE_19_ENTRIES = {
    "foreign_webhook",  # foreign_events
    "weak_secret_config",  # weak_signatures (and forged_webhook how=weak_*)
    "serve_killed_at_start",  # serve_kill_at_start
    "serve_kill_followup",
    "limiter_store_down",  # redis_down
    "limiter_store_up",
}


def assert_no_secret_left(workdir: Path, secrets: dict[str, Secret]) -> None:
    """Nothing of the secrets in the work directory (logs, journal, outputs, a SQLite
    ledger), the PostgreSQL ledger or Prefect's database; then drop the databases."""
    soak = json.loads((workdir / "soak.json").read_text())
    postgres = [soak["prefect_database_url"]]
    if not soak["database_url"].startswith("sqlite"):
        postgres.append(soak["database_url"])
    try:
        findings = scan(secrets.values(), Places(directories=[workdir], databases=postgres))
        assert not findings, report(findings)
    finally:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for url in postgres:
                name = make_url(url).database
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def soak_and_audit(workdir: Path, *extra: str) -> None:
    secrets = soak_secrets()
    result = run_soak(workdir, secrets, *extra)
    try:
        assert_soak_ok(result, workdir)
    finally:
        assert_no_secret_left(workdir, secrets)


def soaks_on(database: str) -> None:
    """CI soaks one ledger database per run (`INVOICEFLOW_SOAK_DATABASE`, picked by
    `.ci/run` from the commit), so both are proven over a few runs at half the time;
    unset, as for a developer, both soaks run."""
    chosen = os.environ.get("INVOICEFLOW_SOAK_DATABASE")
    if chosen and chosen != database:
        pytest.skip(f"this CI run soaks {chosen} (INVOICEFLOW_SOAK_DATABASE); unset it for both")


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.timeout(TIMEOUT_SECONDS + 300)
def test_short_soak_on_sqlite(tmp_path: Path, postgres_unavailable: str | None) -> None:
    soaks_on("sqlite")
    if postgres_unavailable:  # Prefect's server runs on PostgreSQL in the soak
        pytest.skip(postgres_unavailable)
    soak_and_audit(tmp_path)


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.timeout(TIMEOUT_SECONDS + 300)
def test_short_soak_on_postgres(tmp_path: Path, postgres_unavailable: str | None) -> None:
    soaks_on("postgres")
    if postgres_unavailable:
        pytest.skip(postgres_unavailable)
    soak_and_audit(tmp_path, "--database-url", POSTGRES_ADMIN_URL)
