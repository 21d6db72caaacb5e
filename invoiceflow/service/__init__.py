"""`invoiceflow serve`: the deployments and the HTTP endpoints in one process.

Imports go one way: this package uses `flows` and the ledger; nothing outside
it imports from here (except the CLI's `serve` command).
"""
