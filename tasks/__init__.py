"""Prefect tasks: thin wrappers that give each business step a name, a timeout
and a retry policy. The logic lives in `invoiceflow/`."""
