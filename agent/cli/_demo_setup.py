"""The demo's processes and their configuration: loopback ports, Orthanc's JSON, the agent's
YAML, background processes and polling with a deadline (used by ``liver-agent demo``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.cli._common import fail

T = TypeVar("T")

ORTHANC_PATHS = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ORTHANC_AET, AGENT_AET, MODALITY = "ORTHANC", "LIVERAI", "liveragent"
STABLE_AGE = 3


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the demo (preferred ones when free, else any free port)."""

    orthanc_http: int
    orthanc_dicom: int
    agent_dicom: int
    agent_http: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(_port(18042), _port(14242), _port(11112), _port(18080))


def _port(preferred: int) -> int:
    for candidate in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


def find_orthanc() -> str | None:
    """The Orthanc executable, or None when Orthanc or its DICOMweb plugin is missing."""
    found = shutil.which("Orthanc") or next((p for p in ORTHANC_PATHS if Path(p).is_file()), None)
    return found if found and DICOMWEB_PLUGIN.is_file() else None


def orthanc_configuration(folder: Path, ports: Ports, lua: Path | None) -> dict[str, Any]:
    """Orthanc on loopback, no HTTP login (loopback only), DICOMweb on, the agent as a modality;
    with ``lua``, studies are routed to the agent when stable."""
    config: dict[str, Any] = {
        "Name": "liver-agent-demo",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": ports.orthanc_http,
        "DicomPort": ports.orthanc_dicom,
        "DicomAet": ORTHANC_AET,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": False,
        "DicomModalities": {MODALITY: [AGENT_AET, "127.0.0.1", ports.agent_dicom]},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": STABLE_AGE,
        "SaveJobs": False,
    }
    if lua is not None:
        config["LuaScripts"] = [str(lua)]
        config["UserMetadata"] = {"LiverAgentSent": 4301}
    return config


def agent_configuration(
    folder: Path, ports: Ports, bundles: tuple[Path, Path] | None
) -> dict[str, Any]:
    """The agent on loopback with absolute paths (so the CLI works from any folder), Orthanc as
    the destination of the studies it sends (SEG, SR and a Secondary Capture)."""
    var = folder / "var"
    config: dict[str, Any] = {
        "dicom": {"ae_title": AGENT_AET, "host": "127.0.0.1", "port": ports.agent_dicom},
        "http": {"host": "127.0.0.1", "port": ports.agent_http},
        "database": {"url": f"sqlite:///{var / 'liver-agent.db'}"},
        "spool": {"path": str(var / "spool")},
        "results": {"path": str(var / "results")},
        "completion": {"quiet_seconds": 2.0},
        "destinations": [
            {
                "name": "orthanc",
                "ae_title": ORTHANC_AET,
                "host": "127.0.0.1",
                "port": ports.orthanc_dicom,
                "send": {"seg": True, "sr": True, "sc": True},
            }
        ],
    }
    if bundles is not None:
        config["model"] = {"segmentation": str(bundles[0]), "classification": str(bundles[1])}
    return config


def env() -> dict[str, str]:
    """The environment of the demo's processes."""
    # torch's OpenMP threads sleep instead of spinning (many times faster on a busy machine);
    # TCP_NODELAY: the DCMTK inside Orthanc otherwise stalls ~40 ms a message on loopback
    return {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "TCP_NODELAY": "1"}


class Child:
    """A background process in its own session (Ctrl-C reaches only the demo, which stops it)."""

    def __init__(self, name: str, args: list[str], cwd: Path, log: Path) -> None:
        self.name, self.log = name, log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env(),
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_for(
    check: Callable[[], T | None], deadline_s: float, what: str, children: list[Child]
) -> T:
    """Poll ``check`` until it returns a value; fail when a child dies or time runs out."""
    end = time.monotonic() + deadline_s
    while True:
        for child in children:
            if not child.alive():
                fail(f"{child.name} stopped while waiting for {what}; see {child.log}")
        with contextlib.suppress(OSError):
            value = check()
            if value is not None:
                return value
        if time.monotonic() > end:
            fail(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def http(method: str, url: str, **kwargs: Any) -> Any:
    """One HTTP request; the JSON answer (None when empty). Raises OSError on any failure, so
    :func:`wait_for` keeps polling."""
    import requests

    try:
        response = requests.request(method, url, timeout=60, **kwargs)
    except requests.RequestException as err:
        raise OSError(str(err)) from err
    if response.status_code >= 400:
        raise OSError(f"{method} {url}: HTTP {response.status_code}")
    return response.json() if response.content else None
