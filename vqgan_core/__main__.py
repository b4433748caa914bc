"""Allow ``python -m vqgan_core ...``."""

import sys

from .cli.main import main

sys.exit(main())
