"""Reconciliation: the safety net for everything a webhook should have told us.

Compares our unfinished requests with Stripe (the List API, never Search, which
lags behind writes), applies what the receiver missed, finishes requests stuck
mid-way, and reports drift it cannot repair.

Imports go one way: reconcile → webhooks / ledger / db. The invoice flow is
passed in (`sweep.reconcile(resume=…)`), so nothing here imports `flows`.
"""
