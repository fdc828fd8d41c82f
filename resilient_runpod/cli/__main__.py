"""``python -m resilient_runpod.cli``: the same as the ``resilient-runpod`` command."""

import sys

from . import main

sys.exit(main())
