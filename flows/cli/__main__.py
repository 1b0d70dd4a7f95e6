"""`python -m flows.cli` runs the command line, as the `liveyield` script does (same exit code)."""

from flows.cli import main

raise SystemExit(main())
