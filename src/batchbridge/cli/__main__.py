"""`python -m batchbridge.cli`: the same entry point as the `batchbridge` script."""

from batchbridge.cli.app import main

raise SystemExit(main())
