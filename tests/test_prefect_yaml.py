"""deployments/prefect.yaml registers the same deployments as `serve`, schedules included.

It runs `prefect deploy --all` against a Prefect server of its own, in a child
process: registering invoice/invoice on the session's server would point the
served deployment at a work pool that no worker serves. That is the heavy tier;
the default tier compares the file with what `serve` builds, in process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest
import yaml

from tests.conftest import REPO

HEARTBEAT = {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}}

_SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from invoiceflow_testing.local_prefect import local_prefect_server

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=sys.argv[1],
                              capture_output=True, text=True, env=os.environ.copy())
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    with local_prefect_server():
        run("work-pool", "create", "invoiceflow", "--type", "process")
        run("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
        from prefect.client.orchestration import get_client
        with get_client(sync_client=True) as client:
            d = client.read_deployment_by_name("invoice/invoice")
            cycle = {name: [(s.schedule.cron, s.schedule.timezone) for s in
                            client.read_deployment_by_name(f"{name}/{name}").schedules]
                     for name in ("billing-run", "dunning", "reconcile")}
            print(json.dumps({"entrypoint": d.entrypoint, "pool": d.work_pool_name,
                              "request": d.parameter_openapi_schema["properties"]["request"],
                              "job_variables": d.job_variables, "cycle": cycle}))
    """
)


def test_the_file_lists_what_serve_builds_on_the_worker_pool(clean_env: pytest.MonkeyPatch) -> None:
    """Without a server: each deployment's entrypoint, parameters and schedules (at
    `serve`'s defaults) as `serve` builds them, on the process pool with the heartbeat
    the crashed-runs automation expects; the invoice parameter is the pydantic model."""
    from flows.invoice import invoice_flow
    from invoiceflow.service.deployments import build_deployments
    from invoiceflow.settings import get_settings

    get_settings.cache_clear()  # serve's defaults: no INVOICEFLOW_* in the environment
    try:
        served = {d.name: d for d in asyncio.run(build_deployments())}
    finally:
        get_settings.cache_clear()
    listed = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())["deployments"]

    assert [d["name"] for d in listed] == list(served)
    for entry in listed:
        built = served[entry["name"]]
        assert entry["entrypoint"] == built.entrypoint
        assert entry["parameters"] == built.parameters
        schedules = [(s["cron"], s["timezone"], s["slug"]) for s in entry.get("schedules", [])]
        assert schedules == [
            (s.schedule.cron, s.schedule.timezone, s.slug)  # type: ignore[union-attr]
            for s in built.schedules or []
        ]
        pool = entry["work_pool"]
        assert (pool["name"], pool["job_variables"]) == ("invoiceflow", HEARTBEAT)
    assert {name: len(served[name].schedules or []) for name in served} == {
        "invoice": 0,
        "billing-run": 1,
        "billing-shard": 0,
        "dunning": 1,
        "reconcile": 1,
    }
    request = invoice_flow.parameters.model_dump()["properties"]["request"]
    assert request["$ref"].endswith("/BillingRequest")


@pytest.mark.slow
@pytest.mark.heavy  # a Prefect server of its own, and `prefect deploy` in a child process
def test_prefect_deploy_all_registers_the_invoice_deployment() -> None:
    env_script = [sys.executable, "-c", _SCRIPT, str(REPO)]
    done = subprocess.run(env_script, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    registered = json.loads(done.stdout.strip().splitlines()[-1])
    assert registered["entrypoint"] == "flows.invoice.invoice_flow"
    assert registered["pool"] == "invoiceflow"
    # The parameter is the pydantic model: the UI's Custom run shows its form.
    assert registered["request"]["$ref"].endswith("/BillingRequest")
    # Workers' runs beat as often as the crashed-runs automation expects.
    assert registered["job_variables"] == HEARTBEAT
    # The billing cycle, on the same crons as `invoiceflow serve`'s defaults.
    assert registered["cycle"] == {
        "billing-run": [["0 6 1 * *", "UTC"]],
        "dunning": [["0 7 * * *", "UTC"]],
        "reconcile": [["30 * * * *", "UTC"]],
    }
