"""``python -m training``: see :mod:`training.cli`."""
import logging
import os
import sys

from .cli import main

code = main()
ddp = sys.modules.get("training.ddp")   # imported only by commands that can run distributed
if ddp is not None and ddp.ended_a_group():
    # a torchrun rank: skip the interpreter's finalization, which gloo's leftover threads
    # made abort now and then (training.ddp.ended_a_group); flush what it would have
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
