"""The product imports, and its CLI runs, with the test doubles not installed.

In a fresh interpreter where `stripe_sandbox` and `invoiceflow_testing` cannot be
imported (a finder ahead of all others refuses them, as a wheel without them would):
every module of invoiceflow/, flows/ and tasks/ imports, `invoiceflow --help` works,
and `invoiceflow sandbox` (and `demo`) say in one line how to get the sandbox, exit 2.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.test_layering import PRODUCT_MODULES, ROOT, TEST_DOUBLES

# Not imported: the demo (it brings the sandbox; its command says so when it is
# missing), `__main__` modules (importing one runs it) and Alembic's migration
# scripts (Alembic runs them, with its context).
SKIPPED = ("invoiceflow.demo", "__main__", ".migrations.")

BLOCK = f"""
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    BLOCKED = {TEST_DOUBLES!r}

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,  # where both packages sit: only the finder keeps them out
        env={**os.environ, "COLUMNS": "100"},
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`invoiceflow ARGS` through the console script's entry point."""
    return _run(
        "from invoiceflow.cli import main\nsys.argv = ['invoiceflow', *sys.argv[1:]]\nmain()",
        *args,
    )


def test_every_product_module_imports_without_the_test_doubles() -> None:
    wanted = [m for m in PRODUCT_MODULES if not any(skip in m for skip in SKIPPED)]
    assert "flows.invoice" in wanted and "invoiceflow.cli" in wanted  # the list is real

    done = _run(
        "import importlib\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "doubles = [m for m in sys.modules if m.partition('.')[0] in NotInstalled.BLOCKED]\n"
        "print(len(sys.argv) - 1, 'imported, test doubles loaded:', doubles)",
        *wanted,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{len(wanted)} imported, test doubles loaded: []"


def test_the_cli_runs_and_says_how_to_get_the_sandbox() -> None:
    helped = _cli("--help")
    assert helped.returncode == 0, helped.stderr
    assert "sandbox" in helped.stdout and "Traceback" not in helped.stderr

    for command in (["sandbox", "--help"], ["demo"]):
        refused = _cli(*command)

        assert refused.returncode == 2, refused.stderr
        assert refused.stdout == ""
        assert refused.stderr == (
            "error: the Stripe sandbox is not installed (package stripe_sandbox); it comes "
            "with invoiceflow's source checkout: pip install -e '.[dev]' there\n"
        )
