"""Named crash points, for tests that kill the process at an exact step (SIGKILL, no clean-up).

`SIGOPS_FAILPOINT=<name>` arms one point; reaching it kills the process as a power cut
would. Unset (always, outside those tests), a point costs one comparison.
"""

from __future__ import annotations

import os
import signal

_armed: str | None = None
_read = False


def crash_point(name: str) -> None:
    """Die here, at once, if this point is the armed one."""
    global _armed, _read
    if not _read:  # read once, on first use, not at import
        _armed, _read = os.environ.get("SIGOPS_FAILPOINT") or None, True
    if _armed == name:
        os.kill(os.getpid(), signal.SIGKILL)
