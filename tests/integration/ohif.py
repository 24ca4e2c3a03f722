"""The OHIF viewer for integration tests: the pinned prebuilt ``@ohif/app`` from npm, served with
Orthanc's DICOMweb under one loopback origin by a small proxy (no CORS, as a site would deploy it).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import mimetypes
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from tests.integration.processes import free_port

OHIF_VERSION = "3.13.2"
#: ``npm view @ohif/app@3.13.2 dist.integrity``: the tarball must match it.
OHIF_INTEGRITY = (
    "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKx"
    "Ffpq+jd5xXZB9E8EA=="
)
INSTALL_SCRIPT = Path(__file__).with_name("install-ohif.sh")
DICOMWEB_PREFIX = "/dicom-web"
#: exit status of install-ohif.sh when the npm registry cannot be reached
REGISTRY_UNREACHABLE = 3


class RegistryUnreachableError(RuntimeError):
    """npm's registry cannot be reached from this machine, so the viewer cannot be installed."""


def install_ohif() -> Path:
    """The dist/ folder of the pinned OHIF viewer, fetched into the user's cache on first use.

    Raises
    ------
    RegistryUnreachableError
        When npm cannot reach its registry (the only reason the viewer test may skip).
    RuntimeError
        When the install fails for another reason.
    """
    proc = subprocess.run(
        [str(INSTALL_SCRIPT), OHIF_VERSION, OHIF_INTEGRITY],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode == REGISTRY_UNREACHABLE:
        raise RegistryUnreachableError(proc.stderr.strip())
    if proc.returncode != 0:
        raise RuntimeError(f"{INSTALL_SCRIPT.name} failed ({proc.returncode}): {proc.stderr}")
    dist = Path(proc.stdout.strip().splitlines()[-1])
    if not (dist / "index.html").is_file():
        raise RuntimeError(f"{dist} holds no index.html")
    return dist


def app_config(origin: str) -> str:
    """``app-config.js`` for OHIF: one DICOMweb data source, the proxied Orthanc at ``origin``."""
    root = origin + DICOMWEB_PREFIX
    config: dict[str, Any] = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "maxNumberOfWebWorkers": 2,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "orthanc",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "orthanc",
                "configuration": {
                    "friendlyName": "Orthanc (liver-agent test)",
                    "name": "orthanc",
                    "wadoUriRoot": root,
                    "qidoRoot": root,
                    "wadoRoot": root,
                    "qidoSupportsIncludeField": False,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "omitQuotationForMultipartRequest": True,
                    "bulkDataURI": {"enabled": True},
                },
            }
        ],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Static files of dist/ (unknown paths get index.html: OHIF routes in the page), the
    generated app-config.js, and ``/dicom-web/*`` forwarded to Orthanc."""

    server: _ViewerHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the test reports what matters

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith(DICOMWEB_PREFIX + "/") or path == DICOMWEB_PREFIX:
            self._forward()
        elif path == "/app-config.js":
            self._send(200, self.server.config_js.encode(), "application/javascript")
        else:
            self._static(path)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _static(self, path: str) -> None:
        dist = self.server.dist
        file = (dist / path.lstrip("/")).resolve()
        if not file.is_relative_to(dist) or not file.is_file():
            file = dist / "index.html"
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if file.suffix == ".wasm":
            content_type = "application/wasm"
        self._send(200, file.read_bytes(), content_type)

    def _forward(self) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")}
        try:
            response = self.server.session.get(
                self.server.orthanc + self.path, headers=headers, timeout=60
            )
        except requests.RequestException as err:
            self._send(502, str(err).encode(), "text/plain")
            return
        content_type = response.headers.get("Content-Type", "application/octet-stream")
        self.server.requests_forwarded += 1
        self._send(response.status_code, response.content, content_type)


class _ViewerHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, dist: Path, orthanc: str) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.dist = dist.resolve()
        self.orthanc = orthanc.rstrip("/")
        self.config_js = app_config(f"http://127.0.0.1:{port}")
        self.session = requests.Session()
        self.requests_forwarded = 0


@dataclass(frozen=True)
class ViewerServer:
    """A running viewer origin: ``url`` serves OHIF, ``url + /dicom-web`` is Orthanc's DICOMweb."""

    url: str
    server: _ViewerHTTPServer

    @property
    def requests_forwarded(self) -> int:
        return self.server.requests_forwarded


@contextlib.contextmanager
def serving_ohif(dist: Path, orthanc_url: str) -> Iterator[ViewerServer]:
    """Serve OHIF's ``dist`` and proxy ``/dicom-web`` to ``orthanc_url`` on a free loopback port.

    Parameters
    ----------
    dist
        The viewer's prebuilt dist/ folder (:func:`install_ohif`).
    orthanc_url
        Orthanc's HTTP root, e.g. ``http://127.0.0.1:8042`` (its DICOMweb root is /dicom-web).
    """
    port = free_port()
    server = _ViewerHTTPServer(port, dist, orthanc_url)
    thread = threading.Thread(target=server.serve_forever, name="ohif-proxy", daemon=True)
    thread.start()
    try:
        yield ViewerServer(f"http://127.0.0.1:{port}", server)
    finally:
        server.shutdown()
        server.server_close()
        server.session.close()
        thread.join(10)
