"""`python -m cli` is `pam`."""

import sys

from cli.main import main

sys.exit(main())
