"""Dunning: reminders for overdue open invoices, then the write-off.

    plan.py    which step is due (pure: due date, cadence, now)
    act.py     one overdue request's unit of work: read Stripe, record, write once
    report.py  what a run did, as lines, a table and a summary
    cli.py     `invoiceflow dunning [--as-of …]`

Imports go one way: cli → (flows.dunning) → run → act → plan, report.
"""
