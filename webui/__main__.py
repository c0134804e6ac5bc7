"""`python -m webui [--host H] [--port P] [--no-auth]`: the same as `lfops webui`."""

import sys

from backend.cli import main

sys.exit(main(["webui", *sys.argv[1:]]))
