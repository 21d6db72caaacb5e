"""Hold a billing run for approval: every request a filled draft, then a person decides.

`hold` is the pipeline's stop point (a request recorded `held` after its lines
are added, nothing finalized); `decide` approves (finalize and send, the
pipeline's own steps under their keys) or rejects (delete the drafts) a held
run; `summary` is what the person reads before deciding. Kept import-free here:
the pipeline imports `hold`, and `decide` imports the pipeline.
"""
