"""Amend a sent invoice by Stripe revision (`invoiceflow amend FILE`, issue 24.2).

`versions` keeps a request's versions in the ledger (content, invoice, state);
`revise` makes version N+1 a Stripe revision of version N's invoice — created
under a key of (request id, N+1), its copied lines deleted, the new lines added,
finalized and sent by the invoice's own steps under their per-invoice keys;
`cli` is the command. Stripe voids the revised invoice when its revision is
finalized.
"""
