"""Prefect flows. Each reads like the DAG it runs; the steps are in `tasks/`.

Importing the package applies invoiceflow's Prefect defaults (before the flow
modules import Prefect), however the flows are started: CLI, worker or UI.
"""

from invoiceflow.prefect_env import configure_prefect

configure_prefect()
