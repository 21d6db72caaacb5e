"""The Prefect UI as an operator sees it, in real headless Chromium.

A Prefect server of its own with the UI on, `invoiceflow serve` registering the
deployments against it, and one invoice run started through POST /invoices.
Then Chromium renders two pages: the `invoice` deployment's "Custom run" form
(the BillingRequest as form fields) and that run's markdown artifact (the
request's story). The test asserts on the rendered DOM's text and that each
screenshot is a real, non-blank image; the PNGs stay in the test's tmp dir.

Prefect 3.9 serves two UIs; the default for a new browser is V2 under /v2, and
these are its routes (found in its bundle: `/deployments/deployment/$id/run`,
`/artifacts/artifact/$id`).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from invoiceflow import story
from invoiceflow_testing.local_prefect import local_prefect_server
from tests.helpers import make_request, wait_for
from tests.test_service import Service, _running_service

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.heavy,  # a browser
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Chromium at /usr/bin/chromium (Debian: apt-get install -y chromium)",
    ),
]

RUN_TIMEOUT = 240  # seconds; a run takes a few, but the machine is shared and busy
# Virtual time lets the single-page app fetch from the API and render before the
# dump; the wall-clock timeout bounds a hung browser on a busy machine.
VIRTUAL_TIME_MS = 15000
CHROMIUM_TIMEOUT = 120
WINDOW = "1400,1000"


def render(url: str, png: Path) -> str:
    """Render `url` once in headless Chromium (offline, a fresh profile): write
    its screenshot to `png` and return the page's visible text after the app
    has rendered, whitespace collapsed. One invocation for both, so the text
    asserted on is the picture's."""
    profile = tempfile.mkdtemp(prefix="invoiceflow-chromium-")
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW}",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}",
        f"--screenshot={png}",
        "--dump-dom",
        url,
    ]
    # Its own process group: on a timeout, its renderer and helper processes
    # go too, not only the browser process.
    browser = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = browser.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.communicate()
        raise
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert browser.returncode == 0, err.decode(errors="replace")[-2000:]
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", out.decode(errors="replace"), flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).strip()


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB(A) bytes of each row of an 8-bit PNG.

    Enough PNG to tell a rendered page from a blank one without an image library
    (Pillow is not among our dependencies)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    offset, idat, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), f"unexpected PNG format {depth=} {colour=}"
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind_byte, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            up_left = previous[i - bpp] if i >= bpp else 0
            if kind_byte == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind_byte == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind_byte == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind_byte == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def assert_rendered_image(path: Path) -> None:
    """A real screenshot: the window's size, and many colours (a blank or
    error page has a handful)."""
    width, height, rows = png_pixels(path)
    assert (width, height) == tuple(int(n) for n in WINDOW.split(",")), (width, height)
    bpp = len(rows[0]) // width
    colours = {row[x : x + 3] for row in rows[::4] for x in range(0, len(row), bpp * 4)}
    assert len(colours) >= 50, f"{path}: only {len(colours)} distinct colours; blank page?"


@pytest.fixture(scope="module")
def ui_server() -> Iterator[Any]:
    with local_prefect_server(ui=True) as server:
        yield server


@pytest.fixture(scope="module")
def served(
    ui_server: Any, sandbox_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("serve-ui")
    with _running_service(ui_server.api_url, sandbox_server.url, workdir) as service:
        yield service


def _completed_run(api_url: str, run_id: str, service: Service) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        run: dict[str, Any] = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10).json()
        state = run.get("state") or {}
        return run if state.get("type") in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

    run: dict[str, Any] = wait_for(final, f"flow run {run_id} to finish", timeout=RUN_TIMEOUT)
    assert run["state"]["type"] == "COMPLETED", f"{run['state']}\n{service.output()}"
    return run


def test_the_deployment_form_and_a_runs_artifact_render_in_chromium(
    ui_server: Any, served: Service, tmp_path: Path
) -> None:
    api, ui = ui_server.api_url, ui_server.ui_url
    request_id = f"ui-shot-{uuid.uuid4().hex[:8]}"  # the sandbox is shared, not reset
    request = make_request(request_id, "acme")
    started = served.post(request.model_dump(mode="json"))
    assert started.status_code == 202, started.text
    _completed_run(api, started.json()["flow_run_id"], served)

    deployment = httpx.get(f"{api}/deployments/name/invoice/invoice", timeout=10).json()
    form_url = f"{ui}/v2/deployments/deployment/{deployment['id']}/run"
    form_png = tmp_path / "ui-deployment-form.png"
    form = render(form_url, form_png)
    # The BillingRequest model as form fields under the `request` parameter; the
    # UI titles the field names (request_id → "Request Id"), nested ones too.
    for field in ("Parameters request", "Request Id", "Customer", "Email", "Currency", "Items"):
        assert field in form, f"{field!r} not on the Custom run page: {form[:2000]}"
    assert_rendered_image(form_png)

    key = story.artifact_key(request_id)
    # The key's page only lists versions; the artifact's own page renders it.
    # (`/artifacts/{key}/latest` answers with the collection's id, not this one's.)
    latest = httpx.post(
        f"{api}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1},
        timeout=10,
    ).json()
    assert latest, f"no artifact {key}\n{served.output()}"
    artifact_url = f"{ui}/v2/artifacts/artifact/{latest[0]['id']}"
    artifact_png = tmp_path / "ui-invoice-artifact.png"
    artifact = render(artifact_url, artifact_png)
    # Rendered markdown, not only the raw text the page also holds: the raw has
    # backticks and asterisks around these.
    for text in (f"Invoice for {request_id}", "Customer: Acme", "Consulting hour", "Total: "):
        assert text in artifact, f"{text!r} not on the artifact page: {artifact[:2000]}"
    assert_rendered_image(artifact_png)
