"""`invoiceflow …` in this process through Typer's CliRunner, leaving nothing behind.

A command that runs a flow configures the process as `python -m invoiceflow` would:
Prefect's defaults into os.environ (`prefect_env.configure_prefect`) and a progress
handler on stderr (`progress.print_to_stderr`), which under CliRunner is the stream
of that one invocation. Both are undone after the test, so the next invocation gets
its own progress lines and no later test inherits the settings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pytest
from typer.testing import CliRunner, Result

from invoiceflow import prefect_env, progress
from invoiceflow.cli import app

Invoke = Callable[..., Result]

# What `configure_prefect` may set besides its defaults.
_ALSO_SET = ("PREFECT_LOGGING_COLORS", "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL")


def in_process_cli(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Invoke:
    """An `invoke(*args)` running the CLI here, in the environment the test configured."""
    for name in (*prefect_env._DEFAULTS, *_ALSO_SET):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:  # set now so that monkeypatch removes what the command adds
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)
    for logger in (progress.log, logging.getLogger("invoiceflow")):
        request.addfinalizer(_restorer(logger))
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        # A fresh progress handler per invocation: it writes to that invocation's stderr.
        progress.log.handlers = [
            h for h in progress.log.handlers if h.get_name() != progress._STDERR_HANDLER_NAME
        ]
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


def configured_cli(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, env: dict[str, str]
) -> Invoke:
    """`in_process_cli` with `env` set, run from the test's tmp_path (no `.env` of the
    checkout takes part), the runtime and settings read afresh before and after."""
    from invoiceflow.runtime import reset_runtime

    monkeypatch.chdir(request.getfixturevalue("tmp_path"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_runtime()  # and the settings' cache
    request.addfinalizer(reset_runtime)
    return in_process_cli(monkeypatch, request)


def _restorer(logger: logging.Logger) -> Callable[[], None]:
    handlers, level = list(logger.handlers), logger.level

    def restore() -> None:
        logger.handlers = handlers
        logger.setLevel(level)  # setLevel, not the attribute: it clears the loggers' caches

    return restore
