"""``python -m backend``: see :mod:`backend.cli`."""
import sys

from .cli import main

sys.exit(main())
