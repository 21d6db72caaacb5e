"""Stripe's facts and limits that our code depends on, each stated once.

These are Stripe's numbers, not our choices (those live with the code that
chooses them, e.g. how many lines one add_lines call carries). When Stripe
changes one, this is the one line to change, and the comment says where the
number comes from.
"""

from __future__ import annotations

from datetime import timedelta

# Stripe rejects idempotency keys longer than 255 characters.
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Largest page Stripe's list endpoints return.
PAGE_SIZE = 100
# Stripe keeps events for 30 days; an event older than this margin may already
# be gone, so its absence proves nothing.
EVENT_RETENTION = timedelta(days=29)
# Stripe allows at most 250 line items on one invoice.
MAX_ITEMS_PER_INVOICE = 250

# Stripe's amount fields take at most eight digits: 99,999,999 minor units
# ($999,999.99). Source: https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts
# (a few currencies such as IDR allow more; we apply the common cap everywhere,
# per unit, per line and per invoice, so no currency needs a special case).
MAX_AMOUNT = 99_999_999

# Stripe's metadata limits, https://docs.stripe.com/api/metadata: up to 50 keys,
# keys up to 40 characters and without square brackets (they would clash with
# the form encoding `metadata[key]`), values up to 500 characters.
METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500
