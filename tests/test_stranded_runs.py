"""Runs stranded before they started (issue 19, holes 4 and 5): a shard left Pending by
a worker that died while starting it, a shard no worker polls for, an HTTP-triggered
run left Pending or Crashed by a killed `serve`.

The rule (`invoiceflow.stale_runs.why_dead`) is a plain function, tested here on its
own. The proofs run on the session's real Prefect server: `invoiceflow batch
--shards 2` as a real process ends with its exit code, this test playing the
workers (claiming a run as a worker does, then dying, or executing a run with
`prefect flow-run execute`, as a process worker does); and `invoiceflow serve`
answers a repeated POST /invoices for a dead run with a new run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from invoiceflow.settings import SettingsError, load_settings
from invoiceflow.stale_runs import POLLED_WITHIN, Seen, rescue_every, why_dead, why_stranded
from tests.conftest import REPO, app_env
from tests.helpers import assert_exactly_one_invoice, invoices_for, make_request, wait_for

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BOUND = timedelta(seconds=180)


def _ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


# --- the rule ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Pending", "Submitting", "InfrastructurePending"])
def test_a_run_pending_past_the_bound_is_dead_whoever_polls(name: str) -> None:
    # A live worker never picks a Pending run up: only its claimer could start it.
    seen = Seen("PENDING", name, since=_ago(181), polled=_ago(1))
    assert why_dead(seen, NOW, BOUND) == (
        f"stayed {name} for 181 s: the worker that claimed it died before its process started"
    )
    assert why_dead(Seen("PENDING", name, since=_ago(179), polled=None), NOW, BOUND) is None


def test_a_scheduled_run_is_dead_only_when_overdue_and_nothing_polls() -> None:
    overdue = {"since": _ago(3600), "due": _ago(600)}
    never = Seen("SCHEDULED", "Late", **overdue, polled=None)
    assert why_dead(never, NOW, BOUND) == (
        "due 600 s ago, and no worker has polled its deployment in the last 60 s"
    )
    gone = _ago(POLLED_WITHIN.total_seconds() + 1)
    assert why_dead(Seen("SCHEDULED", "Late", **overdue, polled=gone), NOW, BOUND) is not None
    # Queued behind busy workers (4 shards on 2 workers): alive however long it waits.
    busy = Seen("SCHEDULED", "Late", **overdue, polled=_ago(5))
    assert why_dead(busy, NOW, BOUND) is None
    # Not due yet, or due only just, or just scheduled again: alive, polled or not.
    for since, due in ((_ago(86400), NOW + timedelta(days=30)), (_ago(3600), _ago(179))):
        assert why_dead(Seen("SCHEDULED", "Scheduled", since, due), NOW, BOUND) is None
    again = Seen("SCHEDULED", "AwaitingRetry", since=_ago(10), due=_ago(3600))
    assert why_dead(again, NOW, BOUND) is None


@pytest.mark.parametrize("state", ["CRASHED", "FAILED", "CANCELLED"])
def test_a_run_that_ended_without_finishing_is_dead(state: str) -> None:
    seen = Seen(state, state.title(), since=_ago(1))
    assert why_dead(seen, NOW, BOUND) == f"ended {state.title()}"


@pytest.mark.parametrize(
    ("state", "name"),
    [
        ("COMPLETED", "Completed"),
        ("COMPLETED", "AwaitingPayment"),
        ("RUNNING", "Running"),  # a silent one is the crashed-runs automation's
        ("PAUSED", "Paused"),
        ("CANCELLING", "Cancelling"),
    ],
)
def test_finished_running_or_paused_runs_are_not_judged(state: str, name: str) -> None:
    assert why_dead(Seen(state, name, since=_ago(86400), polled=None), NOW, BOUND) is None


def test_serve_takes_back_only_its_runs_stranded_pending() -> None:
    # Pending past the bound: its claimer (a killed serve) is gone; no client need POST again.
    stranded = Seen("PENDING", "Pending", since=_ago(181), polled=_ago(1))
    assert why_stranded(stranded, NOW, BOUND) == why_dead(stranded, NOW, BOUND) is not None
    assert why_stranded(Seen("PENDING", "Pending", since=_ago(30)), NOW, BOUND) is None
    # An ended run is the automation's or the flow's verdict, for a person or a POST.
    for state in ("CRASHED", "FAILED", "CANCELLED", "COMPLETED", "RUNNING"):
        assert why_stranded(Seen(state, state.title(), since=_ago(9999)), NOW, BOUND) is None
    late = Seen("SCHEDULED", "Late", since=_ago(9999), due=_ago(9999), polled=None)
    assert why_stranded(late, NOW, BOUND) is None  # serve polls its own deployments
    # A few rescues per bound: the soak's 45 s → every 15 s; the default 180 s → 30 s.
    assert [rescue_every(timedelta(seconds=s)) for s in (3, 45, 180, 3600)] == [1, 15, 30, 30]


@pytest.mark.usefixtures("clean_env")
def test_the_bound_is_a_setting_of_a_few_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().stale_run_seconds == 180
    monkeypatch.setenv("INVOICEFLOW_STALE_RUN_SECONDS", "20")
    assert load_settings().stale_run_seconds == 20
    for bad in ("0", "-5", "soon"):
        monkeypatch.setenv("INVOICEFLOW_STALE_RUN_SECONDS", bad)
        with pytest.raises(SettingsError, match="INVOICEFLOW_STALE_RUN_SECONDS") as refused:
            load_settings()
        assert "\n" not in str(refused.value)


# --- billing-run shards on a real Prefect server ----------------------------------------


@pytest.fixture
def shard_deployment(prefect_api: str) -> Iterator[uuid.UUID]:
    """`billing-shard` registered afresh on the session's server, polled by nobody but
    this test (a fresh deployment: never polled), removed afterwards."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.types.entrypoint import EntrypointType

    from flows.billing_shard import billing_shard_flow
    from invoiceflow.batch.shards import SHARD_DEPLOYMENT

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
        client.delete_deployment(client.read_deployment_by_name(SHARD_DEPLOYMENT).id)
    deployment: Any = billing_shard_flow.to_deployment(
        name="billing-shard", entrypoint_type=EntrypointType.MODULE_PATH
    )
    deployment_id: uuid.UUID = deployment.apply()
    yield deployment_id
    with get_client(sync_client=True) as client:
        client.delete_deployment(deployment_id)


def _shard_source(tmp_path: Path, count: int) -> tuple[Path, list[Any]]:
    from tests.test_billing_run import _as_json, _jsonl

    prefix = f"st{uuid.uuid4().hex[:6]}"
    requests = [make_request(f"{prefix}-{n}", f"{prefix}-c{n}") for n in range(count)]
    return _jsonl(tmp_path / f"{prefix}.jsonl", [_as_json(r) for r in requests]), requests


def _batch(source: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "invoiceflow", "batch", str(source), "--shards", "2"],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _poll(deployment_id: uuid.UUID, tag: str) -> list[Any]:
    """Ask for the deployment's due runs, as a worker does (which marks it polled);
    the ones of billing run `tag`."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.get_scheduled_flow_runs_for_deployments([deployment_id])
    return [run for run in runs if tag in run.tags]


def _claim(run_id: uuid.UUID) -> None:
    """What a worker (or `serve`'s runner) does first, before it starts the run's process."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Pending

    pending: Any = Pending()
    with get_client(sync_client=True) as client:
        assert client.set_flow_run_state(run_id, pending).status is SetStateStatus.ACCEPT


def _execute(run_id: uuid.UUID, env: dict[str, str]) -> None:
    """What a process worker runs for a flow run it took."""
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "execute", str(run_id)],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _states(run_id: uuid.UUID) -> list[Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return list(client.read_flow_run_states(run_id))


@pytest.mark.heavy
def test_a_shard_left_pending_by_a_dead_worker_is_scheduled_again_and_billed_once(
    shard_deployment: uuid.UUID,
    prefect_api: str,
    sandbox: Any,
    stripe_client: Any,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    from tests.test_billing_run import _run_id_of

    source, requests = _shard_source(tmp_path, 4)
    tag = f"billing-run:{_run_id_of(source)}"
    env = app_env(
        sandbox.url, sqlite_url, INVOICEFLOW_STALE_RUN_SECONDS="5", PREFECT_API_URL=prefect_api
    )
    parent = _batch(source, env)
    try:
        runs = wait_for(lambda: len(r := _poll(shard_deployment, tag)) == 2 and r, "2 shards")
        [victim] = [run for run in runs if run.name.endswith("-1-of-2")]
        [other] = [run for run in runs if run.id != victim.id]
        _claim(victim.id)  # ... and the worker dies before it starts the process
        _execute(other.id, env)  # another worker bills its shard

        # The billing run takes the dead shard back; a live worker (this test,
        # still polling) gets it again and bills it.
        def again() -> bool:
            return any(run.id == victim.id for run in _poll(shard_deployment, tag))

        wait_for(again, "the stranded shard to be scheduled again", timeout=300)
        _execute(victim.id, env)
        stdout, stderr = parent.communicate(timeout=300)
    finally:
        if parent.poll() is None:
            parent.kill()

    assert parent.returncode == 0, (stdout, stderr[-3000:])
    assert "4 requests: 4 invoiced" in stdout
    assert (
        f"shard 1/2 of billing run {tag.removeprefix('billing-run:')} ({victim.id}) "
        "stayed Pending for"
    ) in stderr
    assert "died before its process started; marked Crashed and scheduled again" in stderr
    assert "Traceback" not in stderr
    for request in requests:
        assert_exactly_one_invoice(stripe_client, request)
    names = [state.name for state in _states(victim.id)]
    assert names[-5:] == ["Pending", "Crashed", "AwaitingRetry", "Running", "Completed"], names


@pytest.mark.heavy
def test_shards_no_worker_polls_for_end_the_batch_with_exit_7_saying_so(
    shard_deployment: uuid.UUID,
    prefect_api: str,
    sandbox: Any,
    stripe_client: Any,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    from tests.test_billing_run import _run_id_of

    source, requests = _shard_source(tmp_path, 2)
    run_id = _run_id_of(source)
    env = app_env(
        sandbox.url, sqlite_url, INVOICEFLOW_STALE_RUN_SECONDS="3", PREFECT_API_URL=prefect_api
    )
    done = _batch(source, env)
    stdout, stderr = done.communicate(timeout=300)

    assert done.returncode == 7, (stdout, stderr[-3000:])
    assert f"billing run {run_id} (attempt 1): 2 requests: 2 unfinished" in stdout, stdout
    assert stderr.count("and no worker has polled its deployment in the last 60 s") == 2, stderr
    assert stderr.count("marked Crashed, its entries wait for a rerun") == 2, stderr
    rerun = f"rerun `invoiceflow batch {source} --run-id {run_id} --shards 2`"
    assert rerun in stderr.strip().splitlines()[-1], stderr
    assert "Traceback" not in stderr
    for request in requests:
        assert invoices_for(stripe_client, request.request_id) == []


# --- POST /invoices again for a dead run --------------------------------------------------


@pytest.fixture(scope="module")
def quick_service(
    prefect_api: str, sandbox_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    from tests.test_service import _running_service

    workdir = tmp_path_factory.mktemp("serve-stale")
    with _running_service(
        prefect_api, sandbox_server.url, workdir, INVOICEFLOW_STALE_RUN_SECONDS="3"
    ) as running:
        yield running


def _dead_run_of(request: Any, left: str) -> Any:
    """The run a killed `serve` left for `request`: created by its POST (same key),
    claimed by its runner (Pending) and, after a Prefect restart, Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Scheduled

    from invoiceflow.run_tags import tags_for

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("invoice/invoice")
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"request": request.model_dump(mode="json")},
            tags=tags_for(request, trigger="http"),
            idempotency_key=request.request_id,
            # Due later: the live runner must not take it before it is claimed.
            state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(hours=1)),
        )
        _claim(run.id)
        if left == "Crashed":
            client.set_flow_run_state(run.id, Crashed(message="the server restarted"))
        return client.read_flow_run(run.id)


# --- a run killed Running just before serve restarts ---------------------------------------


def test_a_serve_restart_keeps_the_crash_windows_open(prefect_api: str) -> None:
    # Each serve start ensures the crashed-runs automation. Updating it gave its trigger
    # a new id on the server, and Prefect keys each run's open no-heartbeat window by
    # that id: a run killed within 90 s before the restart then stayed Running for ever
    # (the soak's stranded run, serve being restarted every ~40 s).
    import asyncio

    import httpx

    from invoiceflow.service.automations import ensure_crashed_runs_automation

    def trigger_of(automation_id: Any) -> tuple[str, str]:
        stored = httpx.get(f"{prefect_api}/automations/{automation_id}", timeout=10).json()
        return stored["trigger"]["id"], stored["updated"]

    first = asyncio.run(ensure_crashed_runs_automation())
    before = trigger_of(first)
    again = asyncio.run(ensure_crashed_runs_automation())  # serve started again

    assert again == first
    assert trigger_of(again) == before


def _wait_completed(run_id: str) -> None:
    """Until the run is Completed (AwaitingPayment included); a Crashed on the way is
    not an end when something takes the run back."""
    from tests.test_service import RUN_TIMEOUT, _flow_run

    def completed() -> bool:
        state = _flow_run(run_id).state
        return state is not None and state.is_completed()

    wait_for(completed, f"flow run {run_id} to complete", timeout=RUN_TIMEOUT)


@pytest.mark.heavy
@pytest.mark.parametrize("left", ["Crashed", "Pending"])
def test_a_repeated_post_for_a_dead_run_starts_the_request_again_once(
    quick_service: Any, left: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    request = make_request(f"stranded-{left.lower()}-{tag}", f"cust-{tag}")
    dead = _dead_run_of(request, left)
    assert dead.state.name == left, dead.state
    if left == "Pending":  # the service's bound (3 s) passes: Prefect stamps states itself
        since = dead.state.timestamp
        wait_for(lambda: datetime.now(UTC) - since > timedelta(seconds=4), "the bound", 30)

    again = quick_service.post(request.model_dump(mode="json"))

    assert again.status_code == 202, again.text
    new_run = again.json()["flow_run_id"]
    crashed = [state for state in _states(dead.id) if state.type.value == "CRASHED"]
    assert crashed, _states(dead.id)
    if left == "Crashed":
        assert new_run != str(dead.id)
    else:
        # Past the bound the POST may find it first (a new run after it) or serve's
        # own rescue (the same run, scheduled again): either way it was ended saying why.
        assert crashed[-1].message.startswith("stayed Pending for"), crashed[-1].message
    _wait_completed(new_run)
    assert_exactly_one_invoice(quick_service.stripe, request)
    # The new run is the request's run from now on: a repeat gets it, completed.
    last = quick_service.post(request.model_dump(mode="json"))
    assert (last.status_code, last.json()["flow_run_id"]) == (202, new_run), last.text
    assert last.json()["state"] == "COMPLETED"
    assert len(invoices_for(quick_service.stripe, request.request_id)) == 1


@pytest.mark.heavy
def test_a_run_stranded_pending_by_a_killed_serve_is_billed_without_a_second_post(
    quick_service: Any,
) -> None:
    # A client that POSTed once and waits: serve's restarted runner must take the run back.
    tag = uuid.uuid4().hex[:8]
    request = make_request(f"stranded-once-{tag}", f"cust-{tag}")
    dead = _dead_run_of(request, "Pending")

    _wait_completed(str(dead.id))  # through Crashed: that is not its end here

    assert_exactly_one_invoice(quick_service.stripe, request)
    names = [state.name for state in _states(dead.id)]
    assert names[:4] == ["Scheduled", "Pending", "Crashed", "AwaitingRetry"], names
    assert names[-1] in ("Completed", "AwaitingPayment"), names
    crashed = next(state for state in _states(dead.id) if state.name == "Crashed")
    assert crashed.message.startswith("stayed Pending for"), crashed.message
    # The rescued run stays the request's run: a POST now gets it, not a new one.
    again = quick_service.post(request.model_dump(mode="json"))
    assert (again.status_code, again.json()["flow_run_id"]) == (202, str(dead.id)), again.text
