"""Billing runs: many requests from one source, each its own unit of work.

    source.py    read a source (JSONL, CSV, a directory, or "pending") into entries
    manifest.py  the run's manifest: what each entry came to, so a rerun resumes
    unit.py      bill one entry and classify how it ended
    report.py    counts by outcome, totals by currency, failures with reasons
    shards.py    a run spread over shards: intents first, each shard's share of the manifest
    dispatch.py  start the shards as deployment runs, wait for them with progress
    cli.py       `invoiceflow batch SOURCE`

The flows that run them are `flows/billing_run.py` and `flows/billing_shard.py`.
"""
