"""``python -m training``: see :mod:`training.cli`."""
import sys

from .cli import main

sys.exit(main())
