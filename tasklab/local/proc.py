"""Process plumbing shared by the server guardian and the workers: dying with the parent."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies. No-op elsewhere.

    The kernel delivers it even when the parent was killed with SIGKILL, which is what
    keeps workers and servers from outliving a killed notebook kernel.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def watch_parent(expected_ppid: int, on_orphaned: Callable[[], None], interval: float) -> threading.Thread:
    """Call ``on_orphaned`` as soon as this process's parent is no longer ``expected_ppid``.

    A portable companion to :func:`set_parent_death_signal`, and the guard against the race
    where the parent died before the death signal was armed.
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            if os.getppid() != expected_ppid:
                on_orphaned()
                return

    thread = threading.Thread(target=loop, name="tasklab-parent-watch", daemon=True)
    thread.stop = stop  # type: ignore[attr-defined]
    thread.start()
    return thread
