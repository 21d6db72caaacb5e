"""Two processes running the same request at the same moment: one invoice.

(The in-process variant with two threads is in test_invoice_flow.py; this one
is two `invoiceflow invoice` processes, as a schedule racing an on-demand run.)

Heavy tier: the default tier's race is the in-process one (two threads on the
plain pipeline, SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import stripe

from invoiceflow.db.models import RecoveryPoint
from tests.conftest import REPO, app_env
from tests.helpers import assert_exactly_one_invoice, make_request

pytestmark = [pytest.mark.slow, pytest.mark.heavy, pytest.mark.usefixtures("prefect_api")]


def test_two_processes_racing_make_one_invoice(
    sandbox: Any, stripe_client: stripe.StripeClient, database_url: str, tmp_path: Path
) -> None:
    request = make_request("req-two-processes")
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request.model_dump(mode="json")))
    # Latency keeps both runs in flight together; a lease long enough that the
    # second run waits for the first instead of giving up.
    sandbox.configure(latency_ms=30)
    env = {**os.environ, **app_env(sandbox.url, database_url, INVOICEFLOW_LEASE_SECONDS="60")}
    command = [sys.executable, "-m", "invoiceflow", "invoice", str(request_file), "--no-wait"]
    runs = [
        subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=180) for run in runs]

    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err.decode()
        assert RecoveryPoint.SENT.value in out.decode()
    assert_exactly_one_invoice(stripe_client, request)
    creates = [
        entry
        for entry in sandbox.requests()
        if entry["method"] == "POST" and entry["path"] == "/v1/invoices" and entry["status"] == 200
    ]
    assert len(creates) == 1
