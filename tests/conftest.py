"""Shared fixtures: a real Stripe sandbox over HTTP, real SQLite and PostgreSQL
databases, and a real Prefect server for everything that runs a flow."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

REPO = Path(__file__).resolve().parents[1]
TEST_KEY = "sk_test_invoiceflow_tests"
POSTGRES_ADMIN_URL = os.environ.get(
    "INVOICEFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)

# Prefect reads its settings at import; these must be in place before any test
# imports it, and they keep the test runs quiet and offline.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# Production backs off for seconds to minutes; tests keep the same retry logic
# on a millisecond clock. (Task retry delays are fixed when `tasks` is imported.)
FAST_RETRIES = {
    "INVOICEFLOW_RETRY_BASE_DELAY_SECONDS": "0.01",
    "INVOICEFLOW_RETRY_MAX_DELAY_SECONDS": "0.05",
    "INVOICEFLOW_TASK_RETRY_DELAYS_SECONDS": "[0.05, 0.05, 0.05]",
}
for _name, _value in FAST_RETRIES.items():
    os.environ.setdefault(_name, _value)


# --- tiers -------------------------------------------------------------------
#
# `pytest` runs the default tier: every feature's contract, in about ten minutes on
# two busy cores. `pytest -m heavy` runs the heavy tier: the proofs that need
# servers, kills, browsers or soaks. CI runs both (`.ci/run`).


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test's PostgreSQL double is heavy unless the backend is what it tests.

    The business rules do not depend on the ledger's backend, and their SQLite run
    is the default tier's contract. Where PostgreSQL itself matters (locks, session
    timeouts, races between transactions, the limiter's store), the test says so
    with `@pytest.mark.backend` and both runs stay in the default tier.
    """
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("database_url") == "postgres"
        if on_postgres and item.get_closest_marker("backend") is None:
            item.add_marker(pytest.mark.heavy)


# --- Prefect ---------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real `prefect server start` for the session, shared by in-process flows
    and CLI subprocesses (each would otherwise start its own temporary server)."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from invoiceflow_testing.local_prefect import local_prefect_server

    with local_prefect_server() as server, _this_process_uses(server.api_url):
        yield server.api_url


@contextlib.contextmanager
def _this_process_uses(api_url: str) -> Iterator[None]:
    """Point this process's Prefect client, in every thread, at the session's server too.

    Prefect reads the environment once, when it is imported: a test module
    that imported a flow at collection, before the server started, would
    otherwise make this process (and every thread it starts) talk to a
    temporary server of its own, and see none of the runs, deployments and
    artifacts its subprocesses made. `local_prefect_server` has exported
    PREFECT_API_URL; Prefect's process-wide settings are re-read from it.
    (Tests that start a server of their own use `temporary_settings`.)
    """
    assert os.environ.get("PREFECT_API_URL") == api_url
    context = sys.modules.get("prefect.context")
    if context is not None:
        context.refresh_global_settings_context()
    yield


# --- Stripe sandbox ----------------------------------------------------------


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Any]:
    from stripe_sandbox import start_sandbox

    with start_sandbox() as running:
        yield running


@pytest.fixture
def sandbox(sandbox_server: Any) -> Iterator[Any]:
    """The session's sandbox, emptied and with default knobs for each test."""
    sandbox_server.reset(config=True)
    yield sandbox_server
    sandbox_server.reset(config=True)


@pytest.fixture
def stripe_client(sandbox: Any) -> stripe.StripeClient:
    return stripe.StripeClient(TEST_KEY, base_addresses={"api": sandbox.url}, max_network_retries=0)


# --- databases ---------------------------------------------------------------


def _postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure means: skip, saying why
        return f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {type(exc).__name__}"


@pytest.fixture(scope="session")
def postgres_unavailable() -> str | None:
    return _postgres_reachable()


def _create_database(template: str | None = None) -> str:
    """A new PostgreSQL database (a copy of `template` when given); its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"invoiceflow_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    clause = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    admin.dispose()
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _migrated(url: str) -> None:
    """Bring `url` to the newest schema and leave no connection open to it."""
    from invoiceflow.db.engine import make_engine
    from invoiceflow.db.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()


_templates: dict[str, str] = {}


@pytest.fixture(scope="session", autouse=True)
def _drop_templates() -> Iterator[None]:
    yield
    for url in _templates.values():
        with contextlib.suppress(Exception):
            _drop_database(url)


def _postgres_template() -> str:
    """The name of a database migrated once per test session, for CREATE DATABASE … TEMPLATE:
    cloning it takes a fraction of the 1 to 2 s that running every migration per test did."""
    from sqlalchemy.engine import make_url

    if "postgres" not in _templates:
        url = _create_database()
        _templates["postgres"] = url
        _migrated(url)
    name = make_url(_templates["postgres"]).database
    assert name is not None
    return name


def _postgres_database(reason: str | None, *, migrated: bool = True) -> Iterator[str]:
    """A database of its own for one test (already at the newest schema unless
    `migrated=False`), dropped afterwards."""
    if reason:
        pytest.skip(reason)
    url = _create_database(_postgres_template() if migrated else None)
    try:
        yield url
    finally:
        from invoiceflow.db.engine import dispose_engines

        dispose_engines()
        _drop_database(url)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session; each test gets a copy of it."""
    path = tmp_path_factory.mktemp("template") / "invoiceflow.db"
    _migrated(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using it runs once on SQLite and once on PostgreSQL, on a database of its
    own that is already at the newest schema (a copy of the session's migrated template)."""
    if request.param == "sqlite":
        database = tmp_path / "invoiceflow.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), database)
        yield f"sqlite:///{database}"
        from invoiceflow.db.engine import dispose_engines

        dispose_engines()
    else:
        yield from _postgres_database(request.getfixturevalue("postgres_unavailable"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No STRIPE_* or INVOICEFLOW_* setting from the caller's shell, and no stray .env:
    settings tests see exactly what they set (the returned monkeypatch)."""
    for name in list(os.environ):
        if name.startswith(("STRIPE_", "INVOICEFLOW_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'invoiceflow.db'}"
    from invoiceflow.db.engine import dispose_engines

    dispose_engines()


# --- the environment a run sees ---------------------------------------------------


def app_env(sandbox_url: str, database_url: str, **extra: str) -> dict[str, str]:
    """Environment variables for invoiceflow talking to the sandbox."""
    return {
        "STRIPE_API_KEY": TEST_KEY,
        "STRIPE_API_BASE": sandbox_url,
        "INVOICEFLOW_DATABASE_URL": database_url,
        # Short, so a rerun after a simulated crash may take over quickly.
        "INVOICEFLOW_LEASE_SECONDS": "3",
        "INVOICEFLOW_STRIPE_TIMEOUT_SECONDS": "5",
        "INVOICEFLOW_AWAIT_PAID_SECONDS": "0",
        **FAST_RETRIES,
        **extra,
    }


@pytest.fixture
def configured(
    sandbox: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """This process configured for the sandbox and the test's database."""
    from invoiceflow.runtime import reset_runtime

    env = app_env(sandbox.url, database_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_runtime()
    yield env
    reset_runtime()


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `invoiceflow …` in a fresh process, as a user or a scheduler would."""
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "invoiceflow", *args],
        env=full_env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
