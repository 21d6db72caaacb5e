"""Test harnesses for invoiceflow: a local Prefect server, a pool of workers, an ASGI app
served by uvicorn in a thread.

Not part of the product: the tests and the benchmarks start Prefect with these, and the
demo its webhook receiver. Nothing else under `invoiceflow/`, `flows/` or `tasks/`
imports this package (tests/test_layering.py).
"""
