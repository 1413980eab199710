"""The real `warehouse` command line, stopped at one step of the export until killed: what
tests/test_export_crash.py runs, in a process of its own, to kill it there.

    python tests/paused_export.py STEP [warehouse arguments …]

At STEP (one of warehouse.lifecycle.export.STEPS) it says `export paused at STEP` on stderr and waits.
"""

from __future__ import annotations

import sys
import time

from warehouse.cli import app
from warehouse.lifecycle import export


def main() -> None:
    step, args = sys.argv[1], sys.argv[2:]
    assert step in export.STEPS, f"{step!r} is not one of {export.STEPS}"

    def pause(reached: str) -> None:
        if reached == step:
            print(f"export paused at {step}", file=sys.stderr, flush=True)
            time.sleep(60)  # the test kills the process well before; if it does not, the export goes on

    export.reached = pause
    app(args=args, prog_name="warehouse")


if __name__ == "__main__":
    main()
