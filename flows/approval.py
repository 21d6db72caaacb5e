"""A held billing run served by `invoiceflow serve`: it waits in the Prefect UI for a form.

    billing-run (hold) → every request a filled draft → summary artifact
      → Suspended "approve or reject" (no process, no worker while it waits)
      → the form answered in the UI → the run again from the top, straight to:
      → approve (finalize, send) or reject (delete the drafts), as the CLI does

Prefect's suspend (`suspend_flow_run(wait_for_input=...)`) ends the process; the
answer reschedules the run, which starts from the top. That rerun must not bill
again (a `pending` source read now may hold requests recorded since the person
looked): the run id it held is kept as the flow run's own input
(`HELD_RUN_KEY`), and the rerun goes straight to the decision. The suspend's key
is fixed, so Prefect answers the second suspend with the form's answer instead
of suspending again.

The decision is `invoiceflow.approval.decide`'s, the CLI's own: one per
request, under the row lock, a rerun writing nothing. A run decided with the
CLI meanwhile the same way ends Completed; the other way, Failed (DecidedOtherwise).

Unanswered for INVOICEFLOW_APPROVAL_TIMEOUT_DAYS, Prefect ends the run Failed;
the drafts stay held, and `invoiceflow approve RUN` / `reject RUN` still decide.
"""

from __future__ import annotations

from typing import Literal

from prefect.context import FlowRunContext
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput, create_flow_run_input, read_flow_run_input
from pydantic import Field

from invoiceflow.approval import decide
from invoiceflow.approval.summary import HeldSummary
from invoiceflow.approval.waiting import HELD_RUN_KEY  # the CLI's decision finds it by this
from invoiceflow.runtime import Runtime

# The suspend's pause key: the same on the rerun, so Prefect returns the answer.
PAUSE_KEY = "approval"
UI_REJECT_REASON = "rejected in the Prefect UI; no reason given"


class ApprovalDecision(RunInput):
    """The form a held billing run shows in the Prefect UI ("Resume")."""

    decision: Literal["approve", "reject"] = Field(
        description="approve: finalize and email every draft; reject: delete them all."
    )
    by: str = Field(min_length=1, description="Your name, for the audit log.")
    reason: str = Field(default="", description="Why (for a rejection).")


class ApprovalUnfinished(Exception):
    """Some held requests were not decided; the message says which and how to resume."""


def waits_in_ui(held: HeldSummary) -> bool:
    """A deployment run (served, scheduled, started in the UI) that held drafts waits for
    the form; a run called directly (`invoiceflow batch --hold`) is decided by the CLI."""
    return held.held > 0 and _deployed()


def _deployed() -> bool:
    context = FlowRunContext.get()
    return (
        context is not None
        and context.flow_run is not None
        and bool(context.flow_run.deployment_id)
    )


def held_before() -> str | None:
    """The billing run this flow run held before it was suspended; None on its first run."""
    if not _deployed():
        return None
    value = read_flow_run_input(HELD_RUN_KEY)
    return value if isinstance(value, str) else None


def wait_and_decide(rt: Runtime, run_id: str, held: HeldSummary | None) -> decide.Decision:
    """Suspend the flow run for the form, then decide the run as its answer says.

    On the first run this does not return: the process ends, the run Suspended.
    On the rerun after the form (`held` is None then) Prefect answers the same
    suspend with the form's values, and the decision is made here.
    """
    if held is not None and held_before() is None:
        create_flow_run_input(HELD_RUN_KEY, run_id)  # before suspending: the rerun reads it
    form = ApprovalDecision.with_initial_data(
        description=held.markdown() if held is not None else None
    )
    answer = suspend_flow_run(
        wait_for_input=form,
        timeout=int(rt.settings.approval_timeout_days * 86400),
        key=PAUSE_KEY,
    )
    by = answer.by.strip() or "the Prefect UI"
    if answer.decision == "approve":
        decision = decide.approve(rt, run_id, by)
        verb, command = "approved", f"invoiceflow approve {run_id}"
    else:
        decision = decide.reject(rt, run_id, by, answer.reason.strip() or UI_REJECT_REASON)
        verb, command = "rejected", f"invoiceflow reject {run_id} --reason ..."
    if decision.failures:
        raise ApprovalUnfinished(
            f"billing run {run_id} {verb} by {by}, but {len(decision.failures)} request(s) not "
            f"yet ({'; '.join(decision.failures)[:500]}); run `{command}` to resume"
        )
    return decision
