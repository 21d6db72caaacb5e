"""Stripe webhooks: verify, keep once, apply forward-only (issue 7's receiver).

Imports go one way: webhooks → ledger / db. Nothing outside this package
imports it except whoever serves it (`create_app`).
"""
