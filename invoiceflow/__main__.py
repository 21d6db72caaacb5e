"""`python -m invoiceflow` is the `invoiceflow` command."""

from invoiceflow.cli import main

main()
