"""Test harnesses for invoiceflow: a local Prefect server, a pool of workers.

Not part of the product: the tests and the benchmarks start Prefect with these.
Nothing under `invoiceflow/`, `flows/` or `tasks/` imports this package.
"""
