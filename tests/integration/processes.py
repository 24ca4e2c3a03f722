"""Start and stop real processes for integration tests: the agent, DCMTK tools, Orthanc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

DCMTK = Path("/usr/bin")  # Debian's dcmtk; the venv has pynetdicom scripts of the same names
ECHOSCU = str(DCMTK / "echoscu")
STORESCU = str(DCMTK / "storescu")
STORESCP = str(DCMTK / "storescp")
LIVER_AGENT = str(Path(sys.executable).parent / "liver-agent")
UNDER_WAY = ("received", "queued", "running", "delivering")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int,
    deadline_s: float = 30.0,
    proc: subprocess.Popen[Any] | None = None,
) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {deadline_s} s")


def wait_until(predicate: Any, deadline_s: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(interval)


def dcmtk_env() -> dict[str, str]:
    # without TCP_NODELAY DCMTK stalls ~40 ms a message on loopback (Nagle + delayed ACK)
    return {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class AgentProcess:
    """A ``liver-agent serve`` subprocess in its own working directory."""

    workdir: Path
    config: dict[str, Any]
    port: int
    http_port: int
    ae_title: str = "LIVERAI"
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "agent.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "liver-agent.yaml"

    @property
    def db_path(self) -> Path:
        return self.workdir / "var" / "liver-agent.db"

    @property
    def spool(self) -> Path:
        return self.workdir / "var" / "spool"

    def start(self, wait: bool = True) -> AgentProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [LIVER_AGENT, "serve", "--config", str(self.config_path)],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            wait_for_port(self.port, 60, self.proc)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def token(self) -> str:
        """The admin API token the agent generated at its first start."""
        return (self.workdir / "var" / "http-token").read_text().strip()

    def api(self, path: str, **params: Any) -> Any:
        """GET from the agent's admin API with its token."""
        response = requests.get(
            f"http://127.0.0.1:{self.http_port}{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            params=params,
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def finished_job(self, study_uid: str, deadline_s: float = 60.0) -> dict[str, Any]:
        """The study's latest job (detail view) once it is no longer under way."""

        def final() -> dict[str, Any] | None:
            jobs = self.api("/api/jobs", study_instance_uid=study_uid)["jobs"]
            if not jobs or jobs[0]["status"] in UNDER_WAY:
                return None
            detail: dict[str, Any] = self.api(f"/api/jobs/{jobs[0]['id']}")
            return detail

        job: dict[str, Any] = wait_until(final, deadline_s, f"the job of study {study_uid}")
        return job

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a ``liver-agent`` command against this agent's settings."""
        return subprocess.run(
            [LIVER_AGENT, *args, "--config", str(self.config_path)],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )


def agent_config(port: int, http_port: int, **groups: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "dicom": {"ae_title": "LIVERAI", "host": "127.0.0.1", "port": port},
        "http": {"enabled": True, "host": "127.0.0.1", "port": http_port},
        "completion": {"quiet_seconds": 1.0, "stable_seconds": 30.0, "poll_seconds": 0.2},
        "delivery": {"poll_seconds": 0.2, "retry_seconds": [1, 1, 2]},
        "logging": {"level": "INFO"},
    }
    for key, value in groups.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@contextlib.contextmanager
def running_agent(workdir: Path, **groups: Any) -> Iterator[AgentProcess]:
    port, http_port = free_port(), free_port()
    agent = AgentProcess(workdir, agent_config(port, http_port, **groups), port, http_port)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def storescu(
    port: int,
    files: list[Path],
    *,
    aet: str = "STORESCU",
    aec: str = "LIVERAI",
    verbose: bool = True,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    args = [STORESCU, "-aet", aet, "-aec", aec]
    if verbose:
        args.append("-v")
    args += ["127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(
        args, capture_output=True, text=True, env=dcmtk_env(), check=check, timeout=600
    )


def acknowledged_files(storescu_output: str) -> list[str]:
    """Files that storescu -v saw answered with Success, in order."""
    acked: list[str] = []
    current: str | None = None
    for line in storescu_output.splitlines():
        if "Sending file: " in line:
            current = line.split("Sending file: ", 1)[1].strip()
        elif "Received Store Response (Success)" in line and current is not None:
            acked.append(current)
            current = None
    return acked
