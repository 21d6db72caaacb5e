"""Billing runs: many requests from one source, each its own unit of work.

    source.py    read a source (JSONL, CSV, a directory, or "pending") into entries
    manifest.py  the run's manifest: what each entry came to, so a rerun resumes
    unit.py      bill one entry and classify how it ended
    report.py    counts by outcome, totals by currency, failures with reasons
    cli.py       `invoiceflow batch SOURCE`

The flow that runs them is `flows/billing_run.py`.
"""
