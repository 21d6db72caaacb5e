"""`python -m invoiceflow amend FILE` in a real process against the served sandbox: the
exit code, one line on stdout, and the revision sent once — then the same file again,
which writes nothing."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow import ledger
from invoiceflow.runtime import get_runtime
from tests.conftest import run_cli
from tests.helpers import sent_events
from tests.test_amend import _assert_version, _changed, _file, _revisions_of, _sent, _stripe_writes


@pytest.mark.heavy
def test_amend_in_a_real_process_sends_the_revision_once_in_one_line(
    configured: dict[str, str], sandbox: Any, stripe_client: stripe.StripeClient, tmp_path: Path
) -> None:
    request = _sent(uuid.uuid4().hex[:8])
    rid = request.request_id
    first = ledger.require(get_runtime().engine, rid)
    changed = _changed(request)
    path = _file(tmp_path, changed)

    amended = run_cli("amend", path, env=configured, cwd=tmp_path)

    assert amended.returncode == 0, (amended.stdout, amended.stderr[-3000:])
    [revision] = _revisions_of(stripe_client, rid, str(first.stripe_invoice_id))
    assert amended.stdout.splitlines() == [
        f"{rid}: version 2 sent — {revision.id} {revision.number}"
    ]
    _assert_version(stripe_client, revision, changed)  # its lines, open, emailed once
    assert sent_events(stripe_client, revision.id) == 1
    assert stripe_client.v1.invoices.retrieve(str(first.stripe_invoice_id)).status == "void"

    before = len(sandbox.requests())
    again = run_cli("amend", path, env=configured, cwd=tmp_path)
    assert again.returncode == 0, (again.stdout, again.stderr[-3000:])
    assert again.stdout.splitlines() == [
        f"{rid}: nothing to amend — the file is version 2 already "
        f"({revision.id} {revision.number}, sent)"
    ]
    assert _stripe_writes(sandbox, before) == []
