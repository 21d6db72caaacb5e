"""invoiceflow: Stripe invoicing as an idempotent Prefect workflow."""

__version__ = "0.1.0"
