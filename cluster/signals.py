"""Stop cleanly on SIGINT and SIGTERM, whoever sent them.

A process started in the background by a non-interactive shell inherits SIGINT ignored, and
`ray.init` installs its own SIGTERM handler; either way Ctrl-C or `kill` would leave Serve, the
actors and a Ray cluster the process started behind. After `interrupt_on_signals()` both raise
KeyboardInterrupt in the main thread, so the caller's `finally` blocks run.
"""

import signal


def interrupt_on_signals() -> None:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt in the main thread; call it after `ray.init`."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
