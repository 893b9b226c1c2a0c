"""``python -m streamapp``."""

from streamapp.cli import main

raise SystemExit(main())
