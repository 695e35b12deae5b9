"""`python -m sdfp_hf.cli`: the `sdfp` command."""

import sys

from . import main

sys.exit(main())
