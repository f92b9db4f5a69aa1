"""`python -m vqclip.cli ...` (what `torchrun -m vqclip.cli batch ...` runs in each process)."""

import sys

from . import main

sys.exit(main())
