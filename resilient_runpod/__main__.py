"""``python -m resilient_runpod``: the same as the ``resilient-runpod`` command."""

import sys

from .cli import main

sys.exit(main())
