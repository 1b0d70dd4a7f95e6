"""`python -m flows.cli` runs the command line, as the `liveyield` script does."""

from flows.cli import main

main()
