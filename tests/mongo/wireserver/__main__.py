"""``python -m tests.mongo.wireserver [ARGS]``: the same as ``python -m tests.mongo wireserver [ARGS]``."""

import sys

from .cli import main

sys.exit(main())
