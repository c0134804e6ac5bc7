"""Named crash points for the crash-injection test and bench.

A multi-step operation calls `crash_point("save.pushed")` at each step boundary. When the process runs with
`LFOPS_CRASH_AT=save.pushed`, it dies right there as a SIGKILL would leave it: `os._exit`, so no `finally`, no
`except`, no atexit handler and no database rollback-on-close runs. Unset (always, outside those tests), a crash point
costs one environment lookup.
"""

from __future__ import annotations

import os

ENV = "LFOPS_CRASH_AT"
EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL


def crash_point(name: str) -> None:
    """Die here, abruptly, if LFOPS_CRASH_AT names this point."""
    if os.environ.get(ENV) == name:
        os._exit(EXIT_CODE)
