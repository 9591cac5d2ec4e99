"""Stopping a whole process tree: the embedded run starts commands in their own process group.

A command that handles SIGTERM (training.model_build stops its execution; the training toolkit's user
script outlives a dead trainer) outlives the process we started, so the group is signalled, not the pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Any

_POLL_SECONDS = 0.1


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def stop_process_group(process: subprocess.Popen[Any], grace_seconds: float) -> None:
    """SIGTERM the group led by `process` (started with start_new_session), SIGKILL what is left after the grace."""
    for signum, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
        if not group_alive(process.pid):
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        deadline = time.monotonic() + wait
        while group_alive(process.pid) and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=_POLL_SECONDS)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=1.0)
