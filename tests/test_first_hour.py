"""The first hour as a user (issue 22): what the README and the CLI's own messages
tell a person to do works as they say.

- a billing run with bad rows says "fix them, then rerun `invoiceflow batch FILE
  --run-id ID`": that rerun bills the fixed rows, and rows already done stay done;
- `status`, `db`, `submit` and argument errors start without Prefect, the
  sandbox or Alembic;
- `invoiceflow sandbox webhook-secret URL` and `invoiceflow sandbox pay INVOICE`;
- `--help` reads well at 80 columns; the demo leaves no WAL file behind.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow.batch import manifest
from invoiceflow.batch.outcome import Outcome
from invoiceflow.batch.source import read_source
from invoiceflow.request import BillingRequest
from tests.conftest import app_env
from tests.helpers import assert_exactly_one_invoice, invoices_for, make_request
from tests.inprocess_cli import Invoke, configured_cli

ONE_LINE = [{"sku": "first-hour-seat", "name": "Seat", "unit_amount": 1200, "quantity": 2}]


def _line(request: BillingRequest, **changes: Any) -> str:
    return json.dumps({**request.model_dump(mode="json"), **changes})


# --- 1. the rerun a billing run prescribes ------------------------------------------


@pytest.mark.usefixtures("prefect_api")  # `batch` runs the billing-run flow
def test_the_rerun_a_run_with_bad_rows_prescribes_bills_the_fixed_rows(
    sandbox: Any,
    stripe_client: stripe.StripeClient,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    prefix = f"fh{uuid.uuid4().hex[:6]}"
    good = make_request(f"{prefix}-good", customer=f"{prefix}-a", items=ONE_LINE)
    fixed = make_request(f"{prefix}-fixed", customer=f"{prefix}-b", items=ONE_LINE)
    broken = [{**ONE_LINE[0], "quantity": 0}]
    source = tmp_path / "november.jsonl"
    source.write_text(_line(good) + "\n" + _line(fixed, items=broken) + "\n")
    invoke = configured_cli(monkeypatch, request, app_env(sandbox.url, sqlite_url))

    first = invoke("batch", str(source))

    assert first.exit_code == 7, (first.stdout, first.stderr)
    advice = first.stderr.strip().splitlines()[-1]
    found = re.search(r"fix them, then rerun `([^`]+)`$", advice)
    assert found, advice
    command = shlex.split(found.group(1))
    assert command[:3] == ["invoiceflow", "batch", str(source)] and "--run-id" in command
    assert invoices_for(stripe_client, fixed.request_id) == []

    # The person fixes the row and runs exactly what they were told.
    source.write_text(_line(good) + "\n" + _line(fixed) + "\n")
    rerun = invoke(*command[1:])

    assert rerun.exit_code == 0, (rerun.stdout, rerun.stderr)
    assert rerun.stdout.splitlines()[0].endswith(": 2 requests: 2 invoiced"), rerun.stdout
    assert_exactly_one_invoice(stripe_client, good)  # done before: not billed again
    assert_exactly_one_invoice(stripe_client, fixed)

    # A row the run already billed, changed: refused in one line naming it, nothing billed.
    source.write_text(_line(good, items=[{**ONE_LINE[0], "quantity": 3}]) + "\n")
    changed = invoke(*command[1:])

    assert changed.exit_code == 3, (changed.stdout, changed.stderr)
    (line,) = changed.stderr.strip().splitlines()
    assert line.startswith(f"error: line 1: request {good.request_id!r} is already invoiced by")
    assert "put back what it was billed from" in line
    assert len(invoices_for(stripe_client, good.request_id)) == 1


def _bill_todo(run_id: str, source_path: Path) -> manifest.Started:
    """One attempt of the run, as the billing-run flow makes it, on the plain unit."""
    from invoiceflow import lease
    from invoiceflow.batch import unit
    from invoiceflow.runtime import get_runtime

    rt = get_runtime()
    read = read_source(str(source_path))
    started = manifest.start(rt.engine, run_id, read)
    for position in started.todo:
        entry = read.entries[position].request
        if entry is not None:
            unit.bill_entry(rt, run_id, position, entry, lease.new_owner(uuid.uuid4().hex))
    return started


def _outcomes(run_id: str) -> dict[str | None, str | None]:
    from invoiceflow.runtime import get_runtime

    loaded = manifest.load(get_runtime().engine, run_id)
    assert loaded is not None
    return {item.request_id: item.outcome for item in loaded[1]}


@pytest.mark.usefixtures("configured")
def test_a_run_resumed_with_corrected_rows_keeps_what_it_billed(
    stripe_client: stripe.StripeClient, tmp_path: Path
) -> None:
    """The rule under the loop: the run's own source with new content rebuilds its
    manifest; done requests stay done (and stay in it when the source drops them),
    fixed ones are billed, a changed done one or another source is refused."""
    from invoiceflow.runtime import get_runtime

    engine = get_runtime().engine
    prefix = f"fr{uuid.uuid4().hex[:6]}"
    done, later = (make_request(f"{prefix}-{n}", items=ONE_LINE) for n in ("done", "later"))
    source = tmp_path / "run.jsonl"
    source.write_text(_line(done) + "\n" + _line(later, currency="usd?") + "\n")

    first = _bill_todo("monthly", source)
    assert first.todo == [0]  # the broken row was finished as invalid already
    assert _outcomes("monthly") == {done.request_id: "invoiced", later.request_id: "invalid"}

    # Fixed, with the done row moved below it: matched by request id, not position.
    source.write_text(_line(later) + "\n" + _line(done) + "\n")
    assert manifest.check_resumable(engine, "monthly", read_source(str(source))) == 2
    second = _bill_todo("monthly", source)

    assert second.todo == [0] and second.run.attempts == 2
    assert _outcomes("monthly") == {later.request_id: "invoiced", done.request_id: "invoiced"}
    assert len(invoices_for(stripe_client, done.request_id)) == 1
    assert_exactly_one_invoice(stripe_client, later)

    # A done request the source no longer lists is still part of what the run billed.
    source.write_text(_line(later) + "\n")
    third = _bill_todo("monthly", source)
    assert third.todo == [] and third.run.total == 2
    assert _outcomes("monthly") == {later.request_id: "invoiced", done.request_id: "invoiced"}

    # A done request whose content changed: a conflict naming its line; nothing changes.
    source.write_text(_line(later, description="other words") + "\n")
    with pytest.raises(manifest.ManifestConflict, match=rf"^line 1: request '{later.request_id}'"):
        manifest.check_resumable(engine, "monthly", read_source(str(source)))
    with pytest.raises(manifest.ManifestConflict):
        manifest.start(engine, "monthly", read_source(str(source)))
    assert _outcomes("monthly")[later.request_id] == Outcome.INVOICED.value

    # Another source under the run's id is still refused as before.
    other = tmp_path / "other.jsonl"
    other.write_text(_line(make_request(f"{prefix}-other", items=ONE_LINE)) + "\n")
    with pytest.raises(manifest.ManifestError, match="already bills other content"):
        manifest.start(engine, "monthly", read_source(str(other)))


# --- 3. commands that only read the ledger start without Prefect ------------------------

# Runs in a fresh interpreter: which modules a command imports is the thing under test.
_IMPORTS_PROBE = """
import json, sys
from typer.testing import CliRunner
from invoiceflow.cli import app

HEAVY = ("prefect", "alembic", "stripe_sandbox.server", "flows", "uvicorn")
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, args)
    loaded = [name for name in HEAVY if name in sys.modules]
    print(json.dumps({"args": args, "exit": result.exit_code, "loaded": loaded}), flush=True)
"""


def test_status_db_submit_and_argument_errors_import_no_prefect_sandbox_or_alembic(
    sqlite_url: str, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    from invoiceflow.db.engine import get_engine
    from tests.conftest import REPO

    get_engine(sqlite_url)  # an existing ledger, at the newest migration
    commands = [
        ["invoice"],  # a missing argument
        ["status", "--state", "bogus"],
        ["serve", "--port", "99999"],
        ["sandbox", "--port", "99999"],
        ["batch", "missing.jsonl"],
        ["submit", "missing.jsonl"],
        ["status"],
        ["db", "upgrade"],  # the one that needs Alembic: last
    ]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "INVOICEFLOW_"))},
        "INVOICEFLOW_DATABASE_URL": sqlite_url,
        "STRIPE_API_KEY": "sk_test_first_hour",
        "PYTHONPATH": str(REPO),
    }
    ran = subprocess.run(
        [sys.executable, "-c", _IMPORTS_PROBE, json.dumps(commands)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert ran.returncode == 0, ran.stderr
    results = [json.loads(line) for line in ran.stdout.splitlines()]
    assert [r["exit"] for r in results] == [2, 2, 2, 2, 2, 2, 0, 0], results
    for result in results[:-1]:
        assert result["loaded"] == [], result
    assert results[-1]["loaded"] == ["alembic"], results[-1]


def test_a_migration_s_file_name_is_its_revision() -> None:
    """What lets a current database skip Alembic: the newest file names the head."""
    from invoiceflow.db import migrate, revision

    for path in sorted(revision.VERSIONS_DIR.glob("*.py")):
        found = re.search(r'^revision = "([^"]+)"$', path.read_text(), re.MULTILINE)
        assert found and path.name.startswith(f"{found.group(1)}_"), path.name
    assert revision.head_by_file_name() == migrate.head_revision()


# --- 5. the sandbox's webhook secret, and paying in it ----------------------------------


@pytest.fixture
def sandbox_cli(
    sandbox: Any,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Invoke:
    return configured_cli(monkeypatch, request, app_env(sandbox.url, sqlite_url))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_printed_webhook_secret_verifies_the_payment_the_pay_command_makes(
    sandbox_cli: Invoke,
    stripe_client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from invoiceflow import ledger
    from invoiceflow.runtime import get_runtime, reset_runtime
    from invoiceflow.settings import get_settings
    from invoiceflow.webhooks.app import create_app
    from invoiceflow_testing.uvicorn_thread import running
    from tests.helpers import bill_plain, wait_for

    port = _free_port()
    url = f"http://127.0.0.1:{port}/webhooks/stripe"
    first = sandbox_cli("sandbox", "webhook-secret", url)
    again = sandbox_cli("sandbox", "webhook-secret", url)  # a secret shows once: replaced

    for result in (first, again):
        assert result.exit_code == 0, result.stderr
        assert re.fullmatch(r"whsec_[A-Za-z0-9]{24,}\n", result.stdout), result.stdout
    assert first.stdout != again.stdout
    assert "replaced we_" in again.stderr
    (endpoint,) = stripe_client.v1.webhook_endpoints.list().data
    assert endpoint.url == url and "invoice.paid" in endpoint.enabled_events

    # `serve`'s receiver, with the secret as the README exports it.
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", again.stdout.strip())
    reset_runtime()
    billed = make_request(f"pay{uuid.uuid4().hex[:6]}", items=ONE_LINE)
    sent = bill_plain(billed)
    with running(create_app(get_settings()), port=port):
        declined = sandbox_cli("sandbox", "pay", sent.stripe_invoice_id, "--card", "declined")
        assert declined.exit_code == 4, (declined.stdout, declined.stderr)
        assert declined.stderr.startswith(f"error: {sent.stripe_invoice_id} declined: ")

        paid = sandbox_cli("sandbox", "pay", billed.request_id)  # a request id works too

        assert paid.exit_code == 0, paid.stderr
        assert paid.stdout.startswith(f"{sent.stripe_invoice_id} (") and ": paid," in paid.stdout
        engine = get_runtime().engine
        row = wait_for(
            lambda: (r := ledger.load(engine, billed.request_id)) and r.paid_at and r,
            "the signed invoice.paid to reach the receiver",
        )
    assert row.recovery_point == "paid"
    again_paid = sandbox_cli("sandbox", "pay", sent.stripe_invoice_id)
    assert again_paid.exit_code == 2 and "already paid" in again_paid.stderr


def test_the_sandbox_commands_refuse_in_one_line(
    sandbox_cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    from invoiceflow.runtime import reset_runtime

    unknown = sandbox_cli("sandbox", "pay", "no-such-request")
    assert (unknown.exit_code, unknown.stdout) == (2, "")
    assert unknown.stderr.startswith("error: no request 'no-such-request'; give an invoice id")

    bad_url = sandbox_cli("sandbox", "webhook-secret", "not a url")
    assert bad_url.exit_code == 2 and bad_url.stderr.count("\n") == 1, bad_url.stderr

    monkeypatch.delenv("STRIPE_API_BASE")
    reset_runtime()
    for args in (("pay", "in_123"), ("webhook-secret", "http://127.0.0.1:1/x")):
        result = sandbox_cli("sandbox", *args)
        assert result.exit_code == 2
        assert result.stderr.startswith("error: STRIPE_API_BASE is not set; "), result.stderr
        assert result.stderr.count("\n") == 1


# --- 12. help at 80 columns; the demo's database ---------------------------------------


def _commands() -> list[tuple[list[str], Any]]:
    import typer.main

    from invoiceflow.cli import app

    found = []

    def walk(command: Any, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_help_reads_well_in_an_80_column_terminal() -> None:
    from typer.testing import CliRunner

    from invoiceflow.cli import app

    commands = _commands()
    assert ["sandbox", "pay"] in [path for path, _ in commands]
    for path, command in commands:
        shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})

        assert shown.exit_code == 0, path
        assert "<bool>" not in shown.output, path
        assert not [line for line in shown.output.splitlines() if len(line) > 80], path
        for param in command.params:
            for name in (*param.opts, *param.secondary_opts):
                if name.startswith("--"):
                    assert name in shown.output, f"{' '.join(path)} --help cuts {name} off"


def test_the_demo_s_database_is_one_file_once_it_is_done(tmp_path: Path) -> None:
    """`invoiceflow demo` ends with `close_database()` (the heavy tier's demo test
    checks the file the real demo leaves)."""
    from invoiceflow.db.engine import get_engine, transaction
    from invoiceflow.db.models import BillingRun
    from invoiceflow.demo import close_database

    database = tmp_path / "invoiceflow-demo.db"
    with transaction(get_engine(f"sqlite:///{database}")) as session:
        session.add(BillingRun(run_id="demo", source="demo", source_digest="d", total=0))
    assert Path(f"{database}-wal").exists()  # a live WAL database, as the demo leaves it

    close_database()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["invoiceflow-demo.db"]


# --- 4. the README's commands work as printed ---------------------------------------------


def _readme() -> str:
    from tests.conftest import REPO

    return (REPO / "README.md").read_text(encoding="utf-8")


def _doc(name: str) -> str:
    """A page of docs/, where the README's map leads (the walk-through, the service)."""
    from tests.conftest import REPO

    return (REPO / "docs" / name).read_text(encoding="utf-8")


def _readme_and_docs() -> str:
    from tests.conftest import REPO

    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def test_the_readme_activates_the_venv_before_any_invoiceflow_command() -> None:
    """`invoiceflow …` as printed needs the venv's bin on PATH: the install says
    to activate it, before the first command and before each walk-through terminal
    (docs/walkthrough.md)."""
    readme = _readme()
    install = re.search(r"## The two commands\n\n```bash\n(.*?)```", readme, re.DOTALL)
    assert install, "README has no install block"
    commands = [line.split("#")[0].strip() for line in install.group(1).splitlines()]
    activates = [n for n, line in enumerate(commands) if ". .venv/bin/activate" in line]
    uses = [n for n, line in enumerate(commands) if line.startswith("invoiceflow ")]
    assert activates and uses and activates[0] < uses[0], commands
    assert not [line for line in commands if ".venv/bin/" in line and "activate" not in line]
    walkthrough = _doc("walkthrough.md")
    for terminal in ("sandbox", "session"):  # the prose right before each terminal's block
        before = walkthrough[: walkthrough.index(f"<!-- walkthrough:{terminal} -->")]
        assert ". .venv/bin/activate" in before[-300:], terminal


def test_the_readme_starts_prefect_without_its_profile_prompt_and_says_what_local_mode_costs() -> (
    None
):
    readme = _readme_and_docs()
    starts = re.findall(r"^prefect .*server start.*$", readme, re.MULTILINE)
    assert starts and all("--no-prompt" in line for line in starts), starts
    page = _doc("walkthrough.md")
    walkthrough = page[page.index("## A walk-through, offline") : page.index("## The commands")]
    assert "export PREFECT_API_URL=http://127.0.0.1:4200/api" in walkthrough
    assert "a minute or more on a busy one" in walkthrough
    assert "invoiceflow sandbox webhook-secret http://127.0.0.1:8080/webhooks/stripe" in readme
    assert "invoiceflow sandbox pay " in readme
