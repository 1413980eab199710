"""The real `warehouse` command line, stopped at one step of the export until killed: what
tests/test_export_crash.py runs, in a process of its own, to kill it there.

    python tests/paused_export.py STEP [warehouse arguments …]

At STEP (one of warehouse.lifecycle.export.STEPS) it says `export paused at STEP` on stderr and waits
(the first time only): until SIGUSR1, then it goes on; the tests that do not send it kill it.
"""

from __future__ import annotations

import signal
import sys

from warehouse.cli import app
from warehouse.lifecycle import export


def main() -> None:
    step, args = sys.argv[1], sys.argv[2:]
    assert step in export.STEPS, f"{step!r} is not one of {export.STEPS}"

    paused = []
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})

    def pause(reached: str) -> None:
        if reached == step and not paused:
            paused.append(step)
            print(f"export paused at {step}", file=sys.stderr, flush=True)
            signal.sigtimedwait({signal.SIGUSR1}, 60)  # if no test sends it or kills the process, it goes on

    export.reached = pause
    app(args=args, prog_name="warehouse")


if __name__ == "__main__":
    main()
