"""``python -m mtlutils`` runs the command line (see :mod:`mtlutils.core.cli`)."""

from mtlutils.core.cli import main

raise SystemExit(main())
