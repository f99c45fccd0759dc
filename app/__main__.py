"""``python -m dcrn.app`` is the ``dcrn`` command."""

import sys

from .cli import main

sys.exit(main())
