"""`python -m dashboard`: the monitor without the trap's commands (same options as `blankfilter monitor`)."""

import sys

from dashboard.cli import main

sys.exit(main())
