"""``python -m backend``: see :mod:`backend.cli`."""
import signal
import sys

from .cli import main

code = main()
# the last JSON line is out: a cancel in the ~50 ms Python takes to shut down would kill
# the process (-15) after a complete run, or after its error was reported
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.exit(code)
