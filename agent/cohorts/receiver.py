"""Where C-MOVE results land: the agent's own SCP.

A running ``liver-agent serve`` answers C-ECHO on the agent's AE title and port: its SCP takes
the moved instances in (the same ingest, the same database). When nothing answers there, the
command starts a temporary SCP of its own on that AE title and port for as long as it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from agent.context import AgentContext
from agent.scp import StorageSCP

logger = logging.getLogger(__name__)


def agent_answers(ctx: AgentContext, timeout: float = 3.0) -> bool:
    """Whether an agent SCP already answers C-ECHO on our AE title and port."""
    s = ctx.settings.dicom
    if s.tls.enabled:
        return False  # a TLS SCP would need the client certificate; start our own instead
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host  # noqa: S104
    ae = AE(ae_title=s.ae_title)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, s.port, ae_title=s.ae_title)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == 0
    finally:
        assoc.release()


@contextmanager
def move_receiver(ctx: AgentContext) -> Iterator[str]:
    """Make sure an SCP of ours takes C-MOVE results; yield who does (``serve`` or ``temporary``).

    Raises
    ------
    OSError
        Nothing of ours answers and the port cannot be bound (another program holds it).
    """
    if agent_answers(ctx):
        logger.info("C-MOVE results go to the running agent's SCP")
        yield "serve"
        return
    scp = StorageSCP(ctx.settings.dicom, ctx.ingestor, ctx.metrics)
    scp.start()
    logger.info("temporary SCP %s on port %s for C-MOVE results", scp.settings.ae_title, scp.port)
    try:
        yield "temporary"
    finally:
        scp.stop()
