"""Ctrl-C, SIGTERM and SIGHUP end a command the same way: outputs stay complete or absent.

Outputs are written to hidden temporary files and folders and renamed into place when complete
(:mod:`eyegc.common.imageio`); their cleanup runs when an exception unwinds the stack. SIGINT
raises KeyboardInterrupt by default, but SIGTERM (``kill``, a batch system's time limit) and SIGHUP
(a closed terminal) would end the process without unwinding and leave ``.OUT.partial-*`` behind.
:func:`stop_signals_unwind` makes them raise :class:`Terminated`, a KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["STOP_SIGNALS", "Terminated", "exit_status", "interrupts_deferred", "stop_signals_unwind"]

#: The signals that stop a command: Ctrl-C, ``kill`` (or a scheduler), a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program was, so that cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """The shell's status for a command ended by a signal: 128 + its number (130 for Ctrl-C)."""
    return 128 + (interrupt.signum if isinstance(interrupt, Terminated) else signal.SIGINT)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def stop_signals_unwind() -> Iterator[None]:
    """For the block, SIGTERM and SIGHUP raise :class:`Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back the :data:`STOP_SIGNALS` for the block; the first takes effect right after it ends.

    A recording handler rather than a blocked signal mask: the mask is per thread, and torch's
    worker threads would still take the signal and interrupt the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs signal handlers
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)  # Python's SIGINT handler raises KeyboardInterrupt here
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), received[0])
