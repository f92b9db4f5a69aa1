"""`python -m vqclip ...`: the same as the `vqclip` command."""

import sys

from .cli import main

sys.exit(main())
