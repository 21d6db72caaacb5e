"""The README's main command, as a new user runs it: no configuration, offline.

Heavy tier: the demo starts Prefect's temporary server of its own and runs every
request through it, in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.heavy]


def test_demo_runs_offline_with_no_configuration(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("STRIPE_", "INVOICEFLOW_", "PREFECT_"))
    }
    # A fresh user: no Prefect server configured, nothing in ~/.prefect.
    env["HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-m", "invoiceflow", "demo"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "demo OK" in result.stdout
    assert "Stripe invoices: 4 for 4 requests" in result.stdout
    assert "Stripe writes on resubmission: 0" in result.stdout
    assert "paid" in result.stdout
    assert (tmp_path / "invoiceflow-demo.db").exists()
    # Every connection closed: no -wal or -shm file beside it (issue 22, item 12).
    assert sorted(p.name for p in tmp_path.glob("invoiceflow-demo.db*")) == ["invoiceflow-demo.db"]
    assert "sk_test_" not in output, "the demo printed an API key"
    assert "Traceback" not in output
