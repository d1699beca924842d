"""`python -m convert`: the model tools (tune, eval, convert) without the trap's commands."""

import sys

from convert.cli import main

sys.exit(main())
