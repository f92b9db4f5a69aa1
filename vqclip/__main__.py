"""`python -m vqclip ...`: the same as the `vqclip` command."""

import sys

from .cli import main

code = main()
# CPython remembers a KeyboardInterrupt that escaped source text run by exec() or eval() (dataclasses and namedtuples
# are made that way, so any lazy import is such code) even when vqclip caught it, and `python -m` then ends the
# process by SIGINT (status -2) instead of the status main returned, e.g. 130 after a Ctrl-C or SIGTERM that landed
# during an import. Running an empty source clears that flag; the `vqclip` script is not affected.
exec("")
sys.exit(code)
