"""A dunning run without Prefect, for tests of dunning's rules.

The dunning flow (flows/dunning.py) runs each request's unit (`act.dun`) as a task;
`invoiceflow.dunning.run.in_sequence` runs the same units one after another. The flow
itself is proven on the session's Prefect server (tests/test_dunning.py's CLI test,
tests/test_dunning_clock.py's clock test).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from invoiceflow import lease
from invoiceflow.dunning import run
from invoiceflow.dunning.report import DunningReport
from invoiceflow.runtime import get_runtime


def dun_in_sequence(as_of: datetime | None = None) -> DunningReport:
    """One dunning run as of `as_of` (None: each invoice as of its own customer's clock)."""
    return run.in_sequence(get_runtime(), as_of, lease.new_owner(f"dunning-{uuid.uuid4().hex}"))
