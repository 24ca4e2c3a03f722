"""Keep pynetdicom's association reactor from taking a response meant for a waiting request.

As association requestor, pynetdicom 3.0 runs a reactor thread that serves the peer's requests.
Each ``send_*`` method pauses it (clears a checkpoint and waits for a flag), sends, blocks on the
DIMSE queue for the response and then resumes it. The flag is set just *before* the reactor
waits on the checkpoint and cleared just after, so a reactor that has passed the checkpoint but
not yet cleared the flag looks paused: the request goes out, and when the peer answers quickly
the reactor takes the response off the queue ("Received unexpected C-STORE service message"),
while the sender waits out the whole DIMSE timeout and aborts. Under CPU load this failed a
delivery attempt now and then (the objects were sent again on the retry). The same window is
open for every request the agent sends as requestor: C-STORE and N-ACTION (deliveries, storage
commitment), C-FIND, C-MOVE and C-GET (cohort pulls, on-demand retrieval).

:func:`reactor_held` closes the window: it gives the reactor a checkpoint that the ``send_*``
methods cannot open, waits until the reactor thread is actually blocked on it, and only then lets
requests go out. Messages that arrive meanwhile stay queued; the reactor serves them once the
hold ends (a storage commitment report, for one). With a pynetdicom that lacks these internals
the hold does nothing and pynetdicom's own pausing applies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _HeldCheckpoint(threading.Event):
    """A checkpoint that ``set()`` leaves closed; only :meth:`open` opens it."""

    def set(self) -> None:
        return None

    def open(self) -> None:
        super().set()

    def has_waiter(self) -> bool:
        return bool(getattr(getattr(self, "_cond", None), "_waiters", None))


@contextmanager
def reactor_held(assoc: Any, timeout: float = 5.0) -> Iterator[bool]:
    """Hold ``assoc``'s reactor for the ``with`` block; yield whether it could be held.

    Waits at most ``timeout`` seconds for the reactor to block (it does so within a
    millisecond or so unless the association is ending, in which case the block runs anyway:
    the ``send_*`` methods report a closed association themselves).
    """
    original = getattr(assoc, "_reactor_checkpoint", None)
    if not isinstance(original, threading.Event) or not hasattr(assoc, "_is_paused"):
        yield False
        return
    held = _HeldCheckpoint()
    assoc._reactor_checkpoint = held
    deadline = time.monotonic() + timeout
    while (
        not held.has_waiter()
        and assoc.is_established
        and getattr(assoc, "is_alive", lambda: True)()
        and time.monotonic() < deadline
    ):
        time.sleep(0.0002)
    try:
        yield held.has_waiter()
    finally:
        assoc._reactor_checkpoint = original
        original.set()
        held.open()
