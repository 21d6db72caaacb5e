"""Every benchmark runs, in its smallest form, so `bench/` cannot rot.

The figures themselves are measured by hand and written into docs/benchmarks.md:
on a shared CI machine they would only measure its load. Each
benchmark starts its own sandbox, and where it needs one its own Prefect
server and databases, as separate processes. Heavy tier.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SMOKES = {
    "bench_calls.py": ["--smoke"],
    "bench_ceiling.py": ["--smoke"],
    "bench_cost.py": ["--smoke"],
    "bench_script.py": ["--smoke"],
    "bench_shards.py": ["--smoke"],
    "bench_throughput.py": ["--smoke"],
    "bench_memory.py": ["--smoke"],
    "bench_payment_latency.py": ["--smoke"],
    "bench_rate_limit.py": ["--backend", "all", "--seconds", "2", "--threads", "2"],
}


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.parametrize("script", sorted(SMOKES))
def test_benchmark_runs(script: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    result = subprocess.run(
        [sys.executable, f"bench/{script}", *SMOKES[script]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
