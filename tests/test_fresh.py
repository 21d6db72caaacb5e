"""What this process made moments ago, which spares a lookup before a write (`invoiceflow.fresh`).

Plain in-process state: no sandbox, database or Prefect server needed.
"""

from __future__ import annotations

import pytest

from invoiceflow import fresh


def test_what_this_process_made_stays_fresh_for_its_span_and_then_is_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`fresh` forgets oldest first: a re-noted id is fresh again, stale ones go."""
    monkeypatch.setattr(fresh, "FRESH_SECONDS", 5.0)
    monkeypatch.setattr(fresh, "_made", {})
    made = object()  # no last_response: not a replay
    fresh.note("in_old", made)
    fresh.note("in_again", made)
    # 5.2 s pass: what was noted is aged by that much, as waiting would age it (`fresh`
    # times by time.monotonic()), without the test sleeping through the span.
    for what in list(fresh._made):
        fresh._made[what] -= 5.2
    fresh.note("in_again", made)  # made again: moves to the end, fresh once more
    fresh.note("in_new", made)
    assert fresh.is_fresh("in_new") and fresh.is_fresh("in_again")
    assert not fresh.is_fresh("in_old")
    assert list(fresh._made) == ["in_again", "in_new"]  # the stale one is gone, not kept
