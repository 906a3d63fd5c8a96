"""``python -m mtlutils`` runs the command line (see :mod:`mtlutils.cli`)."""

from mtlutils.cli import main

raise SystemExit(main())
