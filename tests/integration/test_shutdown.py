"""SIGTERM stops the agent within seconds while a delivery hangs on a destination that
accepts connections and never answers (a real ``liver-agent serve`` process)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from agent.context import open_context
from agent.settings import load_settings
from tests.agent.test_delivery import _job_with_result
from tests.agent.test_delivery_lanes import BlackHole
from tests.integration.processes import AgentProcess, agent_config, free_port, wait_until

pytestmark = pytest.mark.integration


def test_sigterm_stops_within_seconds_while_a_delivery_hangs(tmp_path: Path) -> None:
    hole = BlackHole()
    try:
        var = tmp_path / "agent" / "var"
        groups = {
            "database": {"url": f"sqlite:///{var / 'liver-agent.db'}"},
            "spool": {"path": str(var / "spool"), "min_free_mb": 0},
            "results": {"path": str(var / "results")},
            "worker": {"threads": 0},
            "destinations": [
                {
                    "name": "silent",
                    "stow_url": f"http://127.0.0.1:{hole.port}/dicom-web",
                    "route": "always",
                }
            ],
            # long enough that only a shutdown that does not wait for the attempt is quick
            "delivery": {"poll_seconds": 0.2, "retry_seconds": [600], "timeout_seconds": 60},
        }
        # a job with its results and a pending delivery, made before the agent starts
        ctx = open_context(load_settings(None, **groups))
        try:
            _job_with_result(ctx)
        finally:
            ctx.ingestor.close()
            ctx.engine.dispose()
        port, http_port = free_port(), free_port()
        agent = AgentProcess(
            tmp_path / "agent", agent_config(port, http_port, **groups), port, http_port
        ).start()
        try:
            wait_until(lambda: hole.accepted, 30, "the delivery attempt to connect")
            assert agent.proc is not None
            start = time.monotonic()
            agent.proc.send_signal(signal.SIGTERM)
            agent.proc.wait(30)
            took = time.monotonic() - start
            print(f"SIGTERM to exit: {took:.2f} s")
            assert took < 8, f"SIGTERM took {took:.1f} s with a delivery hanging"
        finally:
            agent.stop()
    finally:
        hole.close()
