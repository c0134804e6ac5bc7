"""`python -m webui [--host H] [--port P] [--no-auth]`: the same as `lfops webui`, installed entry points or not."""

import sys

from backend.cli import main
from webui.cli import register

sys.exit(main(["webui", *sys.argv[1:]], plugins=[register]))
