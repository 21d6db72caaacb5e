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
from tests.inprocess_cli import Invoke, in_process_cli

ONE_LINE = [{"sku": "first-hour-seat", "name": "Seat", "unit_amount": 1200, "quantity": 2}]


def _line(request: BillingRequest, **changes: Any) -> str:
    return json.dumps({**request.model_dump(mode="json"), **changes})


def _cli(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, env: dict[str, str]
) -> Invoke:
    """`invoiceflow …` in this process with `env`, from a directory with no `.env`."""
    from invoiceflow.runtime import reset_runtime

    monkeypatch.chdir(request.getfixturevalue("tmp_path"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_runtime()
    request.addfinalizer(reset_runtime)
    return in_process_cli(monkeypatch, request)


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
    invoke = _cli(monkeypatch, request, app_env(sandbox.url, sqlite_url))

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
