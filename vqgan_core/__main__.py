"""Allow ``python -m vqgan_core ...``."""

import sys

from .cli import main

sys.exit(main())
