"""``python -m galmeta ...`` is the ``galmeta`` command line (:mod:`galmeta.cli`)."""
import sys

from galmeta.cli import main

sys.exit(main())
