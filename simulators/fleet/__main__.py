"""``python -m simulators.fleet``: the command, or (``--worker``) one worker process."""

import sys

from simulators.fleet.cli import main

sys.exit(main())
