"""`python -m backend.cli ...`: the same as `lfops ...`."""

import sys

from backend.cli.main import main

sys.exit(main())
