"""`python -m node`: the same as the `mole` command."""

from node.cli import main

raise SystemExit(main())
