"""What the Prefect console shows of a billing run: its tags.

    trigger:<cli|ui|schedule>  how it was started (as on invoice runs, `invoiceflow.run_tags`)
    currency:<ccy>             each currency it invoiced
    failed:<outcome>           each kind of failure it ended with (`refused`, `temporary`, …)
    unfinished                 entries with no outcome (the process died, the database went)

The trigger is added as the run starts, the rest once it is reported. The run
id is in the run's name (`billing-run-<run id>`); the tag `billing-run:<run id>`
stays its shard runs' own (`dispatch.run_tag`: how a stop finds them to cancel).
Tags are for finding runs, not for billing: a failure here is logged and ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

from invoiceflow.batch.outcome import Outcome
from invoiceflow.batch.report import BatchReport
from invoiceflow.run_tags import tag_this_run


def reported_tags(report: BatchReport) -> list[str]:
    tags = [f"currency:{currency}" for currency in report.totals]
    known = {outcome.value for outcome in Outcome}
    tags += [f"failed:{o}" for o in report.counts if o in known and not Outcome(o).done]
    if report.counts.get("unfinished"):
        tags.append("unfinished")
    return tags


def tag_current_run(tags: Iterable[str]) -> None:
    """Add `tags`, and `trigger:…` unless it has one, to the billing run this is
    called from; the trigger as invoice runs tell it (`run_tags.tag_this_run`)."""
    tag_this_run(tags)
