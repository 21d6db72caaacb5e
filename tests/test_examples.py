"""docs/walkthrough.md ("Using it") works as written: the example files, and the walk-through run
command by command against a real `invoiceflow sandbox` process.

The page marks its walk-through blocks with `<!-- walkthrough:NAME -->`; in the
expected output, `…` stands for whatever differs between runs (ids, URLs).
The example files are checked in process; the walk-through, a sandbox process
and a real `invoiceflow` process per command, is in the heavy tier.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from invoiceflow.request import RequestError, load_request, parse_request
from tests.conftest import REPO

README = (REPO / "docs" / "walkthrough.md").read_text(encoding="utf-8")  # the walk-through
EXAMPLES = sorted((REPO / "examples").iterdir())
INVALID = REPO / "examples" / "invalid.yaml"
README_PORT = "12111"


def readme_block(name: str) -> list[str]:
    """The lines of the fenced block right after `<!-- walkthrough:NAME -->`."""
    match = re.search(rf"<!-- walkthrough:{name} -->\n```\w*\n(.*?)\n```", README, re.DOTALL)
    assert match, f"docs/walkthrough.md has no walkthrough:{name} block"
    return match.group(1).splitlines()


def matches(expected: str, actual: str) -> bool:
    """`…` in the README's output matches anything; the rest literally."""
    pattern = ".*".join(re.escape(part) for part in expected.split("…"))
    return re.fullmatch(pattern, actual) is not None


# --- the example files -----------------------------------------------------------


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p != INVALID], ids=lambda p: p.name)
def test_every_example_is_a_valid_request(path: Path) -> None:
    request = load_request(path)
    assert request.items


def test_the_invalid_example_fails_with_the_lines_the_readme_shows() -> None:
    with pytest.raises(RequestError) as refused:
        load_request(INVALID)

    output = readme_block("output")
    documented = [line for line in output if not line.startswith(("20", "total ", "database:"))]
    assert f"error: {refused.value}".splitlines() == documented


def test_the_readme_request_is_the_acme_example() -> None:
    block = re.search(r"```yaml\n(request_id: 2026-11-acme-consulting.*?)```", README, re.DOTALL)
    assert block, "docs/walkthrough.md shows no billing request"
    in_readme = parse_request(yaml.safe_load(block.group(1)))
    assert in_readme == load_request(REPO / "examples" / "acme-consulting.yaml")


# --- the walk-through, literally ---------------------------------------------------


@pytest.fixture
def walkthrough_sandbox(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Terminal 1: the README's sandbox command, on any free port instead of 12111
    (which another program may hold). Yields the process and the port it took."""
    (command,) = [line for line in readme_block("sandbox") if line.strip()]
    args = [*shlex.split(command, comments=True), "--port", "0"]
    assert args[:2] == ["invoiceflow", "sandbox"]
    process = subprocess.Popen(
        args,
        env=_env({}),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        port = ""
        for line in process.stderr:  # "… listening on http://127.0.0.1:PORT …"
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = found.group(1)
                break
        assert port, "the sandbox did not announce its address"
        # Keep reading its one line per request, or a full pipe would stall it.
        threading.Thread(target=process.stderr.read, daemon=True).start()
        yield process, port
    finally:
        process.terminate()
        process.wait(timeout=15)


def _env(extra: dict[str, str]) -> dict[str, str]:
    """The user's shell: our venv's `invoiceflow` on PATH, no Stripe configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.usefixtures("prefect_api")  # one Prefect server instead of a temporary one per run
def test_the_readme_walkthrough_runs_as_written(
    walkthrough_sandbox: tuple[Any, str], tmp_path: Path
) -> None:
    _, port = walkthrough_sandbox
    # Terminal 2, "from the repository's root": a copy of it holding examples/, so
    # the default ./.env and database of the checkout take no part.
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    # The default per-user ledger, in a data directory of this test's own.
    shell = _env({"XDG_DATA_HOME": str(tmp_path / "data")})
    printed: list[str] = []
    exit_codes = []
    for line in readme_block("session"):
        line = line.replace(f":{README_PORT}", f":{port}")
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "export":
            name, value = words[1].split("=", 1)
            shell[name] = value
            continue
        assert words[0] == "invoiceflow", line
        ran = subprocess.run(
            words, env=shell, cwd=tmp_path, capture_output=True, text=True, timeout=180
        )
        assert "Traceback" not in ran.stderr, ran.stderr
        printed += (ran.stdout + ran.stderr).splitlines()
        exit_codes.append(ran.returncode)

    assert exit_codes == [0, 0, 0, 2], printed
    expected = readme_block("output")
    assert len(printed) == len(expected), printed
    for want, got in zip(expected, printed, strict=True):
        assert matches(want, got), f"docs/walkthrough.md says {want!r}, the run printed {got!r}"
