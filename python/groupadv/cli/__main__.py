"""``python -m groupadv.cli``."""

import sys

from .main import main

sys.exit(main())
