"""``liver-agent demo`` end to end with small test bundles: Orthanc and the agent start, both
phantom studies go round the loop, the job table and the URLs are printed, Ctrl-C stops both."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.bundles import write_test_bundles
from tests.integration.orthanc import orthanc_missing
from tests.integration.processes import wait_until

pytestmark = pytest.mark.integration

LIVER_AGENT = str(Path(sys.executable).parent / "liver-agent")


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_demo_round_trip_then_ctrl_c_stops_both(tmp_path: Path) -> None:
    if missing := orthanc_missing():
        pytest.fail(missing)
    seg, cls = write_test_bundles(tmp_path / "bundles")
    folder = tmp_path / "demo"
    command = [LIVER_AGENT, "demo", "--dir", str(folder), "--seg-model", str(seg)]
    command += ["--cls-model", str(cls), "--matrix", "64", "--slices", "24"]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: any("Ctrl-C" in line for line in lines) or proc.poll() is not None,
            180,
            "the demo to show its results",
        )
        output = "".join(lines)
        assert proc.poll() is None, output
        ports = {int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)/", output)}
        assert len(ports) == 2, output  # Orthanc's and the agent's web pages
        assert all(listening(p) for p in ports), output
        proc.send_signal(signal.SIGINT)
        proc.wait(90)
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines)
    assert proc.returncode == 0, output
    for label in ("cirrhotic", "normal"):
        # the untrained test networks find no liver: a "not evaluated" SR comes back
        assert re.search(rf"{label} study: job \d+ not_evaluated", output), output
        url = rf"{label} study in Orthanc: http://127\.0\.0\.1:\d+/app/explorer\.html#study\?uuid="
        assert re.search(url + r"[0-9a-f-]{44}", output), output
    assert output.count("back in Orthanc: AI Liver SR - NOT EVALUATED") == 2, output
    assert "jobs (2 of 2)" in output
    assert "log in with the token" in output
    assert "Stopped the agent and Orthanc." in output
    assert not any(listening(p) for p in ports)
    assert (folder / "agent" / "var" / "liver-agent.db").is_file()
