"""Prefect flows. Each reads like the DAG it runs; the steps are in `tasks/`."""
