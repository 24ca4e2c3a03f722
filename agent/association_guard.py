"""Deadlines for incoming associations, so that a client that stalls cannot hold a slot.

pynetdicom's timeouts do not cover a peer that sends part of a PDU and stops: the DUL reactor
reads the rest with a blocking ``recv`` on the accepted socket, which has no timeout, and its
ARTIM timer (``acse_timeout``) is only looked at between reads. Such a connection counts
against ``max_associations`` forever; a few of them lock every sender out.

Two guards, both per connection:

- every read of the accepted socket may block at most ``network_timeout`` (a stalled PDU in
  any state of the association ends the connection);
- a connection that has not finished negotiating (A-ASSOCIATE-AC or -RJ sent) within
  ``acse_timeout`` of being opened is shut down, however slowly its peer keeps sending.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable

from pynetdicom.association import Association

logger = logging.getLogger(__name__)


def raw_socket(assoc: Association) -> socket.socket | None:
    """The TCP socket under an association (None once closed)."""
    wrapper = getattr(assoc.dul, "socket", None)
    sock = getattr(wrapper, "socket", None)
    return sock if isinstance(sock, socket.socket) else None


class NegotiationGuard:
    """Arms a deadline when a connection opens; shuts it down if negotiation is unfinished.

    Parameters
    ----------
    negotiation_timeout
        Seconds from connection to the end of association negotiation (``acse_timeout``).
    read_timeout
        Longest a single read of the socket may block (``network_timeout``).
    on_timeout
        Called with the peer address when a connection is shut down for being too slow.
    """

    def __init__(
        self,
        negotiation_timeout: float,
        read_timeout: float,
        on_timeout: Callable[[str], None] | None = None,
    ) -> None:
        self.negotiation_timeout = negotiation_timeout
        self.read_timeout = read_timeout
        self.on_timeout = on_timeout
        self._timers: dict[int, threading.Timer] = {}
        self._lock = threading.Lock()

    def opened(self, assoc: Association) -> None:
        """A connection was accepted: bound its reads and start its negotiation deadline."""
        sock = raw_socket(assoc)
        if sock is not None:
            sock.settimeout(self.read_timeout)
        timer = threading.Timer(self.negotiation_timeout, self._expired, args=(assoc,))
        timer.daemon = True
        timer.name = "association-deadline"
        with self._lock:
            self._timers[id(assoc)] = timer
        timer.start()

    def settled(self, assoc: Association) -> None:
        """Negotiation ended (accepted, rejected) or the connection closed: disarm."""
        with self._lock:
            timer = self._timers.pop(id(assoc), None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        """Disarm every deadline (the server is stopping)."""
        with self._lock:
            timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()

    def _expired(self, assoc: Association) -> None:
        with self._lock:
            if self._timers.pop(id(assoc), None) is None:
                return
        if assoc.is_established or assoc.is_released or assoc.is_aborted or assoc.is_rejected:
            return
        peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
        logger.warning(
            "association from %s did not finish negotiating within %.1f s: closing it",
            peer,
            self.negotiation_timeout,
        )
        sock = raw_socket(assoc)
        if sock is not None:
            # wakes the reactor's blocking recv (it reads end of file: Evt17, closed); the
            # socket may have closed meanwhile, which is what we want anyway
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self.on_timeout is not None:
            self.on_timeout(peer)
