"""Delivery lanes: attempts to different destinations run side by side.

One daemon thread per destination takes that destination's deliveries one after the other, so
a destination that hangs (accepts connections, never answers) delays only its own deliveries,
for at most ``delivery.timeout_seconds`` an attempt. The threads are daemons: stopping the agent
does not wait for an attempt in flight; the delivery it leaves ``sending`` goes back to
``pending`` at the next start (``AgentService._recover``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

_STOP = None


class DeliveryLanes:
    """A queue and a thread for each destination, made on first use."""

    def __init__(self) -> None:
        self._lanes: dict[str, tuple[queue.Queue[Callable[[], None] | None], threading.Thread]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def submit(self, destination: str, attempt: Callable[[], None]) -> bool:
        """Queue ``attempt`` on the destination's lane; False once stopping (not queued)."""
        with self._lock:
            if self._stopping.is_set():
                return False
            lane = self._lanes.get(destination)
            if lane is None:
                jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
                thread = threading.Thread(
                    target=self._run,
                    args=(destination, jobs),
                    name=f"delivery-{destination}",
                    daemon=True,
                )
                lane = (jobs, thread)
                self._lanes[destination] = lane
                thread.start()
        lane[0].put(attempt)
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Take no more attempts; wait up to ``timeout`` seconds in all for the lanes to end."""
        with self._lock:
            self._stopping.set()
            lanes = list(self._lanes.values())
        for jobs, _ in lanes:
            jobs.put(_STOP)
        per_lane = timeout / max(len(lanes), 1)
        for _, thread in lanes:
            thread.join(per_lane)

    def _run(self, destination: str, jobs: queue.Queue[Callable[[], None] | None]) -> None:
        while True:
            attempt = jobs.get()
            if attempt is _STOP or self._stopping.is_set():
                return
            try:
                attempt()
            except Exception:  # a bug in one attempt must not end the lane
                logger.exception("delivery to %s: the attempt failed unexpectedly", destination)
