"""The approve/reject form of a held billing run, answered in the Prefect UI in headless Chromium.

A Prefect server of its own with the UI on, `invoiceflow serve` running the deployments,
and a run of the `billing-run` deployment with `hold`: it holds two drafts and suspends.
Chromium (driven over the DevTools protocol, as a person clicks and types) opens the
run's page, opens its menu, picks "Resume", fills the form (approve, who) and submits.
serve's runner runs the flow again, which approves: the drafts are finalized and sent,
and the run ends Completed. The form's screenshot is kept in the test's tmp dir (and in
docs/img/ when INVOICEFLOW_DOCS_SCREENSHOTS is set, to refresh the docs' picture).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from websockets.sync.client import connect
from websockets.sync.connection import Connection

from invoiceflow_testing.local_prefect import local_prefect_server
from tests.conftest import REPO
from tests.helpers import assert_exactly_one_invoice, invoices_for, make_request, wait_for
from tests.test_service import Service, _running_service
from tests.test_ui import CHROMIUM, WINDOW, assert_rendered_image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.heavy,  # a browser and the served stack
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Chromium at /usr/bin/chromium (Debian: apt-get install -y chromium)",
    ),
]

RUN_TIMEOUT = 240  # seconds; the machine is shared and busy
# A page, a click or a DevTools answer: the Prefect UI renders slowly on a loaded machine.
UI_TIMEOUT = 180.0
DOCS_PICTURE = REPO / "docs" / "img" / "approve-form.png"


class Browser:
    """One headless Chromium page, driven over the DevTools protocol."""

    def __init__(self, socket: Connection) -> None:
        self.socket = socket
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # events arrive in between; the answer carries our id
            message = json.loads(self.socket.recv(timeout=UI_TIMEOUT))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                result: dict[str, Any] = message.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer.get("result", {}).get("value")

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def wait_text(self, *texts: str, timeout: float = UI_TIMEOUT) -> str:
        def shown() -> str | None:
            page = self.text()
            return page if all(t in page for t in texts) else None

        found: str = wait_for(shown, f"{texts} on the page", timeout)
        return found

    def click(self, finder: str, what: str) -> None:
        """Click the centre of the element `finder` (a JS expression) returns, as a mouse does."""
        box = wait_for(
            lambda: self.evaluate(
                f"(() => {{ const e = {finder}; if (!e) return null; e.scrollIntoView("
                "{block: 'center'}); const r = e.getBoundingClientRect(); "
                "return r.width ? {x: r.x + r.width / 2, y: r.y + r.height / 2} : null; })()"
            ),
            what,
            UI_TIMEOUT,
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box["x"],
                y=box["y"],
                button="left" if kind != "mouseMoved" else "none",
                clickCount=1 if kind != "mouseMoved" else 0,
            )
        time.sleep(0.3)  # the app's state update and render

    def type_into(self, finder: str, text: str, what: str) -> None:
        self.click(finder, what)
        self.evaluate(f"{finder}.focus()")  # the click's focus may lag on a busy machine
        self.call("Input.insertText", text=text)
        wait_for(lambda: self.evaluate(f"{finder}.value") == text, f"{what} to hold {text!r}", 30)

    def screenshot(self, png: Path) -> None:
        png.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


@pytest.fixture
def browser() -> Iterator[Browser]:
    profile = tempfile.mkdtemp(prefix="invoiceflow-chromium-")
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW}",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        wait_for(port_file.exists, "Chromium's DevTools port", 60)
        port = wait_for(lambda: port_file.read_text().split("\n")[0].strip(), "the port", 10)
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        [page] = [p for p in pages if p["type"] == "page"]
        with connect(page["webSocketDebuggerUrl"], max_size=None) as socket:
            yield Browser(socket)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def ui_server() -> Iterator[Any]:
    with local_prefect_server(ui=True) as server:
        yield server


@pytest.fixture(scope="module")
def served(
    ui_server: Any, sandbox_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("serve-approve-ui")
    with _running_service(ui_server.api_url, sandbox_server.url, workdir) as service:
        yield service


def _state(api: str, flow_run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()
    state: dict[str, Any] = run.get("state") or {}
    return state


def test_a_held_run_is_approved_in_the_prefect_ui_form_and_its_drafts_are_sent(
    ui_server: Any, served: Service, browser: Browser, tmp_path: Path
) -> None:
    api, ui = ui_server.api_url, ui_server.ui_url
    prefix = f"ui{uuid.uuid4().hex[:6]}"  # the sandbox is shared, not reset
    requests = [
        make_request(f"{prefix}-a", customer=f"{prefix}-acme"),
        make_request(f"{prefix}-b", customer=f"{prefix}-globex", currency="eur"),
    ]
    source = tmp_path / "december.jsonl"
    source.write_text("".join(json.dumps(r.model_dump(mode="json")) + "\n" for r in requests))
    deployment = httpx.get(f"{api}/deployments/name/billing-run/billing-run", timeout=10).json()
    started = httpx.post(
        f"{api}/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": {"source": str(source), "hold": True}},
        timeout=10,
    ).json()
    flow_run_id = started["id"]
    state = wait_for(
        lambda: (
            (s := _state(api, flow_run_id)).get("name") in ("Suspended", "Failed", "Crashed") and s
        ),
        "the held run to suspend",
        RUN_TIMEOUT,
    )
    assert state["name"] == "Suspended", f"{state}\n{served.output()}"
    client: stripe.StripeClient = served.stripe
    for billing_request in requests:
        [draft] = invoices_for(client, billing_request.request_id)
        assert draft.status == "draft"

    width, height = (int(n) for n in WINDOW.split(","))
    browser.call(  # the page's size, not the window's less its frame
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{ui}/v2/runs/flow-run/{flow_run_id}")
    browser.wait_text("Suspended")
    browser.click(
        "[...document.querySelectorAll('button')].find(b => b.innerText.includes('Open menu'))",
        "the run's menu",
    )
    browser.click(
        "[...document.querySelectorAll('[role=menuitem]')].find(m => m.innerText === 'Resume')",
        "Resume in the menu",
    )
    form = browser.wait_text("Resume Flow Run", "held for approval", "Decision", "By")
    assert "Largest invoices" in form, form[:3000]
    browser.click("document.querySelector('[aria-label=\"Select Decision\"]')", "the decision")
    browser.click(
        "[...document.querySelectorAll('[role=option]')].find(o => o.innerText.trim() === "
        "'approve')",
        "approve among the options",
    )
    browser.type_into(
        "document.getElementById([...document.querySelectorAll('[role=dialog] label')]"
        ".find(l => l.innerText.trim() === 'By').htmlFor)",
        "alice",
        "the By field",
    )
    png = tmp_path / "approve-form.png"
    browser.screenshot(png)
    assert_rendered_image(png)
    if os.environ.get("INVOICEFLOW_DOCS_SCREENSHOTS"):
        DOCS_PICTURE.parent.mkdir(exist_ok=True)
        shutil.copyfile(png, DOCS_PICTURE)
    browser.click(
        "[...document.querySelectorAll('[role=dialog] button')].find(b => "
        "b.innerText.trim() === 'Resume')",
        "the form's Resume button",
    )

    final = wait_for(
        lambda: (
            (s := _state(api, flow_run_id)).get("type") in ("COMPLETED", "FAILED", "CRASHED") and s
        ),
        "the approved run to finish",
        RUN_TIMEOUT,
    )
    assert final["type"] == "COMPLETED", f"{final}\n{served.output()}"
    for billing_request in requests:
        invoice = assert_exactly_one_invoice(client, billing_request)
        assert invoice.status == "open"
