"""A real Orthanc process for integration tests: generated configuration on loopback free ports,
the DICOMweb plugin, the agent as a DICOM modality, and a small REST client."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.integration.processes import free_port, wait_for_port

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"  # Debian puts it in /usr/sbin
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AGENT_MODALITY = "liveragent"
AGENT_MANUFACTURER = "liver-agent"  # Manufacturer of the agent's result objects


def orthanc_missing() -> str | None:
    """Why Orthanc cannot run here, or None when the binary and the DICOMweb plugin exist."""
    if not Path(ORTHANC).is_file():
        return f"Orthanc not found ({ORTHANC}); run `make system-packages` (needs root)"
    if not DICOMWEB_PLUGIN.is_file():
        return f"{DICOMWEB_PLUGIN} missing; install the Debian package orthanc-dicomweb"
    return None


@dataclass(frozen=True)
class Modality:
    """A DICOM node Orthanc knows by name (``DicomModalities``)."""

    ae_title: str
    port: int
    host: str = "127.0.0.1"


@dataclass
class OrthancProcess:
    """``Orthanc config.json`` in its own folder, with a REST client.

    Parameters
    ----------
    workdir
        Holds the configuration, the storage, the index and the log.
    modalities
        Name -> DICOM node (the agent is ``liveragent``).
    lua_scripts
        ``LuaScripts`` of the configuration.
    users
        ``RegisteredUsers``; with any, HTTP authentication is on and the client uses the first.
    stable_age
        Seconds without a new instance before a study is stable (Lua ``OnStableStudy``).
    extra
        More configuration options, added last.
    """

    workdir: Path
    modalities: dict[str, Modality] = field(default_factory=dict)
    lua_scripts: Sequence[Path] = ()
    users: dict[str, str] = field(default_factory=dict)
    stable_age: int = 60
    extra: dict[str, Any] = field(default_factory=dict)
    aet: str = "ORTHANC"
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def configuration(self) -> dict[str, Any]:
        """The Orthanc configuration (JSON) this process runs with."""
        return {
            "Name": "liver-agent-tests",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomModalities": {
                name: [m.ae_title, m.host, m.port] for name, m in self.modalities.items()
            },
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "LuaScripts": [str(p) for p in self.lua_scripts],
            "StableAge": self.stable_age,
            "SaveJobs": False,
            "ConcurrentJobs": 2,
            "HttpThreadsCount": 8,
            "OverwriteInstances": True,
            **self.extra,
        }

    def start(self) -> OrthancProcess:
        missing = orthanc_missing()
        if missing:
            raise RuntimeError(missing)
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "orthanc.json"
        config.write_text(json.dumps(self.configuration(), indent=2))
        if self.users:
            self.session.auth = next(iter(self.users.items()))
        log = self.log_path.open("ab")
        # without TCP_NODELAY the DCMTK inside Orthanc stalls ~40 ms a message on loopback
        env = {**os.environ, "TCP_NODELAY": "1"}
        self.proc = subprocess.Popen(
            [ORTHANC, "--verbose", str(config)], cwd=self.workdir, stdout=log, stderr=log, env=env
        )
        wait_for_port(self.http_port, 30, self.proc)
        wait_for_port(self.dicom_port, 30, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.session.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def jobs(self, job_type: str | None = None) -> list[dict[str, Any]]:
        """Orthanc's jobs (``/jobs?expand``), optionally of one type (``DicomModalityStore``)."""
        jobs: list[dict[str, Any]] = self.get("/jobs", expand="")
        return [j for j in jobs if job_type is None or j.get("Type") == job_type]

    # REST client ------------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        response = self.session.get(f"{self.url}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def get_bytes(self, path: str) -> bytes:
        response = self.session.get(f"{self.url}{path}", timeout=30)
        response.raise_for_status()
        return response.content

    def post(self, path: str, body: Any = None, *, data: bytes | None = None) -> Any:
        response = self.session.post(
            f"{self.url}{path}",
            data=data if data is not None else json.dumps(body),
            timeout=120,
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def upload(self, files: Sequence[Path]) -> str:
        """POST each file to ``/instances``; return the Orthanc ID of their (one) study."""
        studies = {
            str(self.post("/instances", data=Path(f).read_bytes())["ParentStudy"]) for f in files
        }
        if len(studies) != 1:
            raise ValueError(f"the files belong to {len(studies)} studies, not one")
        return studies.pop()

    def study_id(self, study_instance_uid: str) -> str | None:
        """Orthanc's ID of a study, or None when Orthanc does not hold it."""
        found = self.post("/tools/lookup", data=study_instance_uid.encode())
        return next((f["ID"] for f in found if f["Type"] == "Study"), None)

    def series(self, study_id: str) -> list[dict[str, Any]]:
        """The study's series (expanded: ``MainDicomTags``, ``Instances``)."""
        result: list[dict[str, Any]] = self.get(f"/studies/{study_id}/series")
        return result

    def series_by_modality(self, study_id: str) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for s in self.series(study_id):
            out.setdefault(s["MainDicomTags"].get("Modality", ""), []).append(s)
        return out

    def agent_results(self, study_id: str) -> dict[str, list[dict[str, Any]]]:
        """The agent's series in a study by kind: ``SEG``, ``SR``, ``KO`` and ``SC`` (a Secondary
        Capture with Modality MR, recognised by the manufacturer the agent writes)."""
        kinds: dict[str, list[dict[str, Any]]] = {}
        for series in self.series(study_id):
            tags = series["MainDicomTags"]
            modality = tags.get("Modality", "")
            if modality in ("SEG", "SR", "KO"):
                kinds.setdefault(modality, []).append(series)
            elif tags.get("Manufacturer") == AGENT_MANUFACTURER:
                kinds.setdefault("SC", []).append(series)
        return kinds

    def add_modality(self, name: str, node: Modality) -> None:
        """Declare a DICOM node at run time (``PUT /modalities/{name}``)."""
        response = self.session.put(
            f"{self.url}/modalities/{name}",
            json={"AET": node.ae_title, "Host": node.host, "Port": node.port},
            timeout=10,
        )
        response.raise_for_status()

    def send_to_modality(self, name: str, resources: Sequence[str]) -> Any:
        """Order a C-STORE of the resources to a modality and wait for it (synchronous job)."""
        return self.post(
            f"/modalities/{name}/store", {"Resources": list(resources), "Synchronous": True}
        )

    def instance_file(self, instance_id: str) -> bytes:
        return self.get_bytes(f"/instances/{instance_id}/file")


@contextlib.contextmanager
def running_orthanc(workdir: Path, **kwargs: Any) -> Iterator[OrthancProcess]:
    """Start Orthanc in ``workdir``; stop it on exit (its log is printed if the block fails)."""
    orthanc = OrthancProcess(workdir, **kwargs).start()
    try:
        yield orthanc
    except BaseException:
        print("---- orthanc log (tail) ----\n" + orthanc.log()[-6000:])
        raise
    finally:
        orthanc.stop()


def wait_for_results(
    orthanc: OrthancProcess, study_instance_uid: str, kinds: set[str], deadline_s: float
) -> tuple[str, dict[str, list[dict[str, Any]]], float]:
    """Poll until the study holds the agent's series of each kind (``SEG``, ``SR``, ``SC``);
    return the study's Orthanc ID, the agent's series by kind and the monotonic time they were
    all there."""
    end = time.monotonic() + deadline_s
    found: dict[str, list[dict[str, Any]]] = {}
    while True:
        study = orthanc.study_id(study_instance_uid)
        if study is not None:
            found = orthanc.agent_results(study)
            if kinds <= set(found):
                return study, found, time.monotonic()
        if time.monotonic() > end:
            raise TimeoutError(
                f"after {deadline_s} s Orthanc holds {sorted(found)} of the agent's results for "
                f"study {study_instance_uid}, not all of {sorted(kinds)}"
            )
        time.sleep(0.1)
