"""`invoiceflow serve` as a real process: a real Prefect server, the sandbox, a
SQLite ledger; runs started as the UI starts them and through POST /invoices.

One serve process for the module (starting one costs seconds); the last test
stops it with a signal. Ids are unique per test: the sandbox is not reset here.
The served stack is the heavy tier. The default tier keeps what needs no served
stack, in process: POST /invoices' refusals, the composed app's routes, the
deployments `serve` registers (parameter schema, schedules) as objects, `serve`'s
own refusals through CliRunner, and the tags of a direct flow call on the
session's Prefect server. (The settle sweeper's contract is in test_webhooks.py.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from tests.conftest import REPO, TEST_KEY, app_env
from tests.helpers import assert_exactly_one_invoice, invoices_for, make_request, wait_for
from tests.inprocess_cli import in_process_cli

# The served stack: `invoiceflow serve` as a process, its runner executing flow runs.
served = pytest.mark.heavy

TOKEN = "test-trigger-token-" + "x" * 16
RUN_TIMEOUT = 240  # seconds; a run takes a few, but the machine is shared and busy
# The events serve's endpoint is registered for, as docs/service.md says.
SETTLING_EVENTS = [
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.voided",
    "invoice.marked_uncollectible",
]


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    stripe: stripe.StripeClient
    workdir: Path
    webhook_secret: str = ""  # the signing secret the sandbox made for serve's endpoint

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def post(self, body: Any, authorization: str | None = f"Bearer {TOKEN}") -> httpx.Response:
        headers = {"Authorization": authorization} if authorization is not None else {}
        return httpx.post(f"{self.url}/invoices", headers=headers, timeout=60, json=body)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Linux: the serve process gets SIGKILL if pytest itself dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _answers(url: str) -> bool:
    try:
        return httpx.post(f"{url}/invoices", timeout=2).status_code == 401
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _running_service(
    prefect_api: str,
    sandbox_url: str,
    workdir: Path,
    *,
    more_webhook_secrets: tuple[str, ...] = (),
    **extra_env: str,
) -> Iterator[Service]:
    """`invoiceflow serve` in a subprocess, answering, registered in the sandbox as
    the webhook endpoint for invoice events; killed with its flow runs after.
    `more_webhook_secrets` are accepted beside the endpoint's (as in a rotation).

    The billing cycle's schedules are off unless `extra_env` sets them: a
    scheduled run left on the session's server would start in the next test's
    service."""
    port = _free_port()
    client = stripe.StripeClient(
        TEST_KEY, base_addresses={"api": sandbox_url}, max_network_retries=0
    )
    endpoint = client.v1.webhook_endpoints.create(
        {"url": f"http://127.0.0.1:{port}/webhooks/stripe", "enabled_events": SETTLING_EVENTS}
    )
    env = {
        **os.environ,
        **app_env(sandbox_url, f"sqlite:///{workdir / 'invoiceflow.db'}"),
        "INVOICEFLOW_TRIGGER_TOKEN": TOKEN,
        "STRIPE_WEBHOOK_SECRET": ",".join([endpoint.secret or "", *more_webhook_secrets]),
        "PREFECT_API_URL": prefect_api,
        **{f"INVOICEFLOW_{name}_CRON": "off" for name in ("BILLING", "DUNNING", "RECONCILE")},
        **extra_env,
    }
    log = workdir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "invoiceflow", "serve", "--port", str(port)],
            env=env,
            cwd=workdir,  # not the repository: the entrypoint must not depend on it
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its flow-run subprocesses share its process group
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    url = f"http://127.0.0.1:{port}"
    running = Service(process, url, log, client, workdir, endpoint.secret or "")
    try:
        deadline = time.monotonic() + 180
        while not _answers(running.url):
            assert process.poll() is None, f"serve exited: {running.output()}"
            assert time.monotonic() < deadline, f"serve did not answer: {running.output()}"
            time.sleep(0.25)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):  # what is left of its group: flow runs
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def service(
    prefect_api: str, sandbox_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    with _running_service(prefect_api, sandbox_server.url, tmp_path_factory.mktemp("serve")) as s:
        yield s


def _flow_run(run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id))


def _wait_final(run_id: str, service: Service) -> Any:
    def final() -> Any:
        run = _flow_run(run_id)
        return run if run.state is not None and run.state.is_final() else None

    run = wait_for(final, f"flow run {run_id} to finish", timeout=RUN_TIMEOUT)
    assert run.state.is_completed(), f"{run.state!r}\n{service.output()}"
    return run


def _unique(prefix: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"{prefix}-{tag}", f"cust-{tag}"


@served
def test_a_run_started_as_the_ui_does_makes_one_invoice(service: Service) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        schema = client.read_deployment_by_name("invoice/invoice").parameter_openapi_schema
    # The parameter is the pydantic model: "Custom run" in the UI shows its form.
    assert schema["properties"]["request"]["$ref"].endswith("/BillingRequest")

    request_id, customer = _unique("ui")
    request = make_request(request_id, customer)
    run = run_deployment(
        name="invoice/invoice",
        parameters={"request": request.model_dump(mode="json")},
        timeout=RUN_TIMEOUT,
    )
    assert run.state is not None and run.state.is_completed(), f"{run.state!r}\n{service.output()}"
    assert_exactly_one_invoice(service.stripe, request)
    tags = _tags(run.id)
    assert {"trigger:ui", f"customer:{customer}", "currency:usd"} <= tags, tags


def _tags(run_id: uuid.UUID) -> set[str]:
    return set(_flow_run(str(run_id)).tags)


@served
def test_post_invoices_starts_one_run_and_a_repeat_returns_the_same_run(
    service: Service,
) -> None:
    request_id, customer = _unique("http")
    request = make_request(request_id, customer)
    body = request.model_dump(mode="json")

    first = service.post(body)
    assert first.status_code == 202, first.text
    run_id = first.json()["flow_run_id"]
    run = _wait_final(run_id, service)
    assert {"trigger:http", f"customer:{customer}", "currency:usd"} <= set(run.tags)
    assert not any(tag in run.tags for tag in ("trigger:ui", "trigger:cli"))
    assert_exactly_one_invoice(service.stripe, request)

    again = service.post(body)
    assert again.status_code == 202, again.text
    assert again.json()["flow_run_id"] == run_id
    assert again.json()["state"] == "COMPLETED"
    assert len(invoices_for(service.stripe, request_id)) == 1

    changed = {**body, "description": "Something else"}
    conflict = service.post(changed)
    assert conflict.status_code == 409, conflict.text
    assert request_id in conflict.json()["errors"][0]


WRONG_AUTHORIZATIONS = [
    None,
    "Bearer wrong-token-of-some-length",
    f"Bearer {TOKEN}x",
    TOKEN,
    f"Basic {TOKEN}",
]


@served
@pytest.mark.parametrize("authorization", WRONG_AUTHORIZATIONS)
def test_post_invoices_without_the_right_token_is_refused(
    service: Service, authorization: str | None
) -> None:
    request_id, customer = _unique("auth")
    body = make_request(request_id, customer).model_dump(mode="json")
    response = service.post(body, authorization)
    assert response.status_code == 401
    assert response.json() == {"errors": ["missing or wrong bearer token"]}
    assert TOKEN not in response.text
    assert invoices_for(service.stripe, request_id) == []


@served
def test_a_bad_body_lists_every_problem_at_once(service: Service) -> None:
    import yaml

    broken = yaml.safe_load((REPO / "examples" / "invalid.yaml").read_text())
    response = service.post(broken)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "customer.email: 'not-an-email' is not a valid email address, e.g. 'billing@example.com'",
        "items[0].unit_price: '12.345' has more decimals than USD allows (2); use e.g. '12.34'",
        "items[1].unit_amount: must be greater than 0, got 0",
        "items[2].unit_price: must be a quoted decimal string like '9.99', not a number: "
        "numbers pass through binary floats and lose cents; quote it",
    ]

    not_json = httpx.post(
        f"{service.url}/invoices",
        headers={"Authorization": f"Bearer {TOKEN}"},
        content=b"{request_id: nope",
    )
    assert not_json.status_code == 400
    assert not_json.json()["errors"][0].startswith("body is not valid JSON")

    too_big = httpx.post(
        f"{service.url}/invoices",
        headers={"Authorization": f"Bearer {TOKEN}"},
        content=b" " * (2 * 1024 * 1024),
    )
    assert too_big.status_code == 413


@served
def test_identical_posts_at_once_share_one_run(service: Service) -> None:
    from concurrent.futures import ThreadPoolExecutor

    request_id, customer = _unique("race")
    request = make_request(request_id, customer)
    body = request.model_dump(mode="json")
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: service.post(body), range(4)))
    assert [r.status_code for r in responses] == [202] * 4, [r.text for r in responses]
    run_ids = {r.json()["flow_run_id"] for r in responses}
    assert len(run_ids) == 1
    _wait_final(run_ids.pop(), service)
    assert_exactly_one_invoice(service.stripe, request)


@served
def test_a_payment_arrives_by_webhook_and_the_invoice_run_turns_paid(
    service: Service,
) -> None:
    """POST /invoices → sent (`AwaitingPayment`); the customer pays; Stripe's signed
    event reaches serve's receiver, which records `paid`; serve's sweeper turns
    the invoice run `Paid`, starting no `settle` run (issue 22, items 2 and 6)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from invoiceflow import ledger
    from invoiceflow.db.engine import get_engine
    from invoiceflow.db.models import RecoveryPoint
    from invoiceflow.webhooks import inbox

    request_id, customer = _unique("paid-by-webhook")
    posted = service.post(make_request(request_id, customer).model_dump(mode="json"))
    assert posted.status_code == 202, posted.text
    run_id = posted.json()["flow_run_id"]
    assert _wait_final(run_id, service).state.name == "AwaitingPayment"
    [invoice] = invoices_for(service.stripe, request_id)

    service.stripe.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})

    engine = get_engine(f"sqlite:///{service.workdir / 'invoiceflow.db'}")
    wait_for(
        lambda: ledger.require(engine, request_id).point is RecoveryPoint.PAID,
        "the webhook to record the payment",
    )
    [event] = [e for e in inbox.events_for(engine, request_id) if e.type == "invoice.paid"]
    run = wait_for(
        lambda: (r := _flow_run(run_id)).state.name == "Paid" and r,
        "the invoice run to say Paid",
        timeout=60,
    )
    assert run.state.is_completed() and run.state.message.startswith(f"{request_id}: paid")
    wait_for(  # marked told once the telling is done, just after
        lambda: inbox.get(engine, event.event_id).settle_started_at is not None,  # type: ignore[union-attr]
        "the event to be marked told",
        timeout=30,
    )
    with get_client(sync_client=True) as client:
        settle_runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"settle-{event.event_id}"]))
        )
    assert settle_runs == []


@served
def test_fifty_write_offs_cost_no_run_and_seconds_and_a_stop_leaves_nothing_pending(
    prefect_api: str, sandbox_server: Any, tmp_path: Path
) -> None:
    """Issue 22 item 2, literally: fifty invoices written off at once. Their fifty
    `invoice.marked_uncollectible` events are recorded and told (invoice runs
    `Uncollectible`, stories) within seconds, starting no flow run; after Ctrl-C
    of serve no run is left Scheduled, Pending or Running. Two requests go
    through POST /invoices (their runs are told); the rest are billed in this
    process into serve's ledger, to keep the test short."""
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterExpectedStartTime

    from invoiceflow import ledger
    from invoiceflow.db.engine import get_engine
    from invoiceflow.db.models import RecoveryPoint
    from invoiceflow.runtime import reset_runtime
    from invoiceflow.webhooks import inbox
    from tests.helpers import bill_plain

    with _running_service(prefect_api, sandbox_server.url, tmp_path) as service:
        posted = [make_request(*_unique("written-off")) for _ in range(2)]
        run_ids = []
        for request in posted:
            answer = service.post(request.model_dump(mode="json"))
            assert answer.status_code == 202, answer.text
            run_ids.append(answer.json()["flow_run_id"])
        database = f"sqlite:///{service.workdir / 'invoiceflow.db'}"
        env = app_env(sandbox_server.url, database)
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            reset_runtime()
            billed = [make_request(*_unique("written-off")) for _ in range(48)]
            for request in billed:
                assert bill_plain(request).state is RecoveryPoint.SENT
            reset_runtime()
        for run_id in run_ids:
            _wait_final(run_id, service)
        requests = [r.request_id for r in posted + billed]
        invoice_ids = [invoices_for(service.stripe, rid)[0].id for rid in requests]
        engine = get_engine(database)
        since = datetime.now(UTC)

        started = time.monotonic()
        for invoice_id in invoice_ids:
            service.stripe.v1.invoices.mark_uncollectible(invoice_id)

        def all_told() -> bool:
            events = [
                e
                for rid in requests
                for e in inbox.events_for(engine, rid)
                if e.type == "invoice.marked_uncollectible"
            ]
            return len(events) == 50 and all(e.settle_started_at for e in events)

        wait_for(all_told, "the fifty write-offs told", timeout=120)
        took = time.monotonic() - started
        assert all(
            ledger.require(engine, rid).point is RecoveryPoint.UNCOLLECTIBLE for rid in requests
        )
        for run_id in run_ids:
            assert _flow_run(run_id).state.name == "Uncollectible"
        assert took < 60, f"fifty endings took {took:.0f} s"

        service.process.send_signal(signal.SIGINT)
        assert service.process.wait(timeout=60) == 0, service.output()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since)
            )
        )
    assert [(r.name, r.state_name) for r in runs] == []  # none started, none left


@served
def test_it_ships_the_crashed_runs_automation(service: Service) -> None:
    from prefect.automations import EventTrigger
    from prefect.client.orchestration import get_client

    from invoiceflow.service.automations import CRASHED_RUNS_AUTOMATION

    with get_client(sync_client=True) as client:
        [automation] = client.read_automations_by_name(CRASHED_RUNS_AUTOMATION)
    assert automation.enabled
    assert isinstance(automation.trigger, EventTrigger)
    assert automation.trigger.within.total_seconds() == 90  # 3 x our 30 s heartbeat
    assert automation.actions[0].type == "change-flow-run-state"


@served
def test_sigterm_stops_it_cleanly_and_leaves_the_deployment_unpaused(service: Service) -> None:
    # Last in this module: it ends the module's serve process.
    from prefect.client.orchestration import get_client

    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=60) == 0, service.output()
    output = service.log.read_text(errors="replace")
    # None of our code failed on the way down. (Prefect 3.9's runner can log a
    # traceback of its own when a run it is cancelling has already ended:
    # "Cannot send a request, as the client has been closed" — its race, not ours.)
    assert not re.search(r'File ".*/(invoiceflow|flows|tasks)/', output), output
    assert "serving deployment invoice/invoice; POST http://127.0.0.1:" in output
    assert TOKEN not in output and TEST_KEY not in output  # nor anything logged by its runs
    with get_client(sync_client=True) as client:
        assert client.read_deployment_by_name("invoice/invoice").paused is False


@served
def test_ctrl_c_stops_it_cleanly(prefect_api: str, sandbox_server: Any, tmp_path: Path) -> None:
    with _running_service(prefect_api, sandbox_server.url, tmp_path) as running:
        running.process.send_signal(signal.SIGINT)
        assert running.process.wait(timeout=60) == 0, running.output()
        assert "Traceback" not in running.output(), running.output()


def _refused(
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    *args: str,
    api_url: str | None = None,
    **env: str,
) -> str:
    """Run `invoiceflow serve` in process, expecting exit 2 and one line on stderr;
    that line. `api_url`: the Prefect API it is given (None: none at all)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from invoiceflow.runtime import reset_runtime

    tmp_path = request.getfixturevalue("tmp_path")
    monkeypatch.chdir(tmp_path)  # no .env, no ./invoiceflow.db of the checkout
    full_env = {
        "INVOICEFLOW_TRIGGER_TOKEN": TOKEN,
        "STRIPE_WEBHOOK_SECRET": "whsec_testRefusals0123456789abcdef",
        "STRIPE_API_KEY": TEST_KEY,
        "INVOICEFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'invoiceflow.db'}",
        "PREFECT_API_URL": api_url or "",
        **env,
    }
    for name, value in full_env.items():
        if value:
            monkeypatch.setenv(name, value)
        else:  # "" means: unset it
            monkeypatch.delenv(name, raising=False)
    reset_runtime()
    request.addfinalizer(reset_runtime)
    invoke = in_process_cli(monkeypatch, request)
    with (
        temporary_settings(updates={PREFECT_API_URL: api_url})
        if api_url
        else temporary_settings(restore_defaults={PREFECT_API_URL})
    ):
        done = invoke("serve", *args)
    assert (done.exit_code, done.stdout) == (2, ""), done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_serve_without_a_prefect_server_exits_2_in_one_line(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    line = _refused(monkeypatch, request, "--port", "0")
    assert line.startswith("error: PREFECT_API_URL is not set; start a server with")


def test_serve_without_a_token_or_with_a_taken_port_exits_2_in_one_line(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    # Refused before it talks to Prefect: any API address will do.
    api = "http://127.0.0.1:9/api"
    line = _refused(monkeypatch, request, api_url=api, INVOICEFLOW_TRIGGER_TOKEN="")
    assert line.startswith("error: INVOICEFLOW_TRIGGER_TOKEN is not set")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = _refused(monkeypatch, request, "--port", port, api_url=api)
    assert line == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


# --- in process: the HTTP app and the deployments, without a served stack ----------


@pytest.fixture
def trigger_settings(configured: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    from invoiceflow.runtime import reset_runtime
    from invoiceflow.settings import load_settings

    monkeypatch.setenv("INVOICEFLOW_TRIGGER_TOKEN", TOKEN)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_testInProcess0123456789abcdef")
    reset_runtime()
    return load_settings()


class _InProcess:
    """Requests to an ASGI app in this process (httpx's ASGI transport), one call each."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import asyncio

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(call())

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)


def _stored(configured: dict[str, str]) -> list[str]:
    from invoiceflow import ledger
    from invoiceflow.db.engine import get_engine

    engine = get_engine(configured["INVOICEFLOW_DATABASE_URL"])
    return [row.request_id for row in ledger.list_requests(engine)]


def test_post_invoices_refusals_in_process(
    trigger_settings: Any, configured: dict[str, str], sandbox: Any
) -> None:
    """401 for every wrong token, 400 listing every problem, 413, and 409 for a request
    id taken by other content: before any run is started, so no Prefect is needed."""
    import yaml

    from invoiceflow import ledger
    from invoiceflow.runtime import get_runtime
    from invoiceflow.service.trigger import create_trigger_app

    client = _InProcess(create_trigger_app(trigger_settings))
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    request_id, customer = _unique("auth")
    body = make_request(request_id, customer).model_dump(mode="json")
    for authorization in WRONG_AUTHORIZATIONS:
        headers = {"Authorization": authorization} if authorization is not None else {}
        response = client.post("/invoices", headers=headers, json=body)
        assert response.status_code == 401, authorization
        assert response.json() == {"errors": ["missing or wrong bearer token"]}
        assert TOKEN not in response.text

    broken = yaml.safe_load((REPO / "examples" / "invalid.yaml").read_text())
    response = client.post("/invoices", headers=bearer, json=broken)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "customer.email: 'not-an-email' is not a valid email address, e.g. 'billing@example.com'",
        "items[0].unit_price: '12.345' has more decimals than USD allows (2); use e.g. '12.34'",
        "items[1].unit_amount: must be greater than 0, got 0",
        "items[2].unit_price: must be a quoted decimal string like '9.99', not a number: "
        "numbers pass through binary floats and lose cents; quote it",
    ]
    not_json = client.post("/invoices", headers=bearer, content=b"{request_id: nope")
    assert not_json.status_code == 400
    assert not_json.json()["errors"][0].startswith("body is not valid JSON")
    too_big = client.post("/invoices", headers=bearer, content=b" " * (2 * 1024 * 1024))
    assert too_big.status_code == 413
    assert _stored(configured) == []

    ledger.submit(get_runtime().engine, make_request(request_id, customer))
    changed = {**body, "description": "Something else"}
    conflict = client.post("/invoices", headers=bearer, json=changed)
    assert conflict.status_code == 409, conflict.text
    assert request_id in conflict.json()["errors"][0]
    assert sandbox.requests() == []  # nothing reached Stripe


def test_the_service_app_routes_each_path_to_its_app(trigger_settings: Any) -> None:
    from invoiceflow.service.app import build_app

    client = _InProcess(build_app(trigger_settings))
    assert client.post("/invoices").status_code == 401  # the trigger: token first
    webhook = client.post("/webhooks/stripe", content=b"{}")
    assert webhook.status_code == 400 and "Stripe-Signature" in webhook.json()["errors"][0]
    assert client.get("/elsewhere").status_code == 404


def test_the_deployments_serve_registers(
    configured: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As objects, before any server sees them: names, module entrypoints, the invoice
    form's parameter schema (the UI's "Custom run"), and the cycle's schedules."""
    import asyncio

    from invoiceflow.runtime import reset_runtime
    from invoiceflow.service.deployments import build_deployments

    monkeypatch.setenv("INVOICEFLOW_SCHEDULE_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("INVOICEFLOW_RECONCILE_CRON", "off")
    reset_runtime()

    deployments = {d.name: d for d in asyncio.run(build_deployments())}

    assert set(deployments) == {
        "invoice",
        "billing-run",
        "billing-shard",
        "dunning",
        "reconcile",
    }
    for deployment in deployments.values():
        assert deployment.entrypoint is not None and deployment.entrypoint.startswith("flows.")
    schema = deployments["invoice"]._parameter_openapi_schema.model_dump()
    # The parameter is the pydantic model: "Custom run" in the UI shows its form.
    assert schema["properties"]["request"]["$ref"].endswith("/BillingRequest")
    schedules = {
        name: [(s.schedule.cron, s.schedule.timezone, s.slug) for s in d.schedules or []]
        for name, d in deployments.items()
    }
    assert schedules == {
        "invoice": [],
        "billing-run": [("0 6 1 * *", "Europe/Berlin", "billing-cycle")],
        "billing-shard": [],
        "dunning": [("0 7 * * *", "Europe/Berlin", "dunning")],
        "reconcile": [],  # "off": runs only when triggered
    }
    assert deployments["billing-run"].parameters == {"source": "pending", "hold": False}


@pytest.mark.usefixtures("prefect_api", "configured")
def test_a_direct_flow_call_is_tagged_as_cli() -> None:
    from flows.invoice import invoice_flow

    request_id, customer = _unique("cli")
    state = invoice_flow(make_request(request_id, customer), return_state=True)
    run_id = state.state_details.flow_run_id
    tags = _tags(run_id)
    assert {"trigger:cli", f"customer:{customer}", "currency:usd"} <= tags, tags
