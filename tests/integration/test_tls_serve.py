"""A real ``liver-agent serve`` with DICOM TLS and HTTPS on: DCMTK ``storescu +tls`` sends a
series, the study shows in the API over HTTPS, plain DICOM to the TLS port is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests
from pydicom.uid import generate_uid

from tests.factory import write_series
from tests.integration.processes import (
    ECHOSCU,
    STORESCU,
    dcmtk_env,
    running_agent,
    wait_until,
)
from tests.tls_certs import make_pki

pytestmark = pytest.mark.integration


def test_serve_with_tls_takes_a_study_in_and_shows_it_over_https(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    server_files = {
        "enabled": True,
        "certificate": str(pki.server.certificate),
        "private_key": str(pki.server.private_key),
    }
    dicom_tls = {**server_files, "ca_bundle": str(pki.ca), "require_client_certificate": True}
    study = generate_uid()
    files = write_series(tmp_path / "series", 3, study_uid=study)
    client = ["+tls", str(pki.client.private_key), str(pki.client.certificate), "-pw"]
    client += ["+cf", str(pki.ca), "-aec", "LIVERAI", "-to", "10"]
    with running_agent(
        tmp_path / "agent",
        worker={"threads": 0},
        dicom={"tls": dicom_tls},
        http={"tls": server_files},
    ) as agent:

        def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [tool, *args, "127.0.0.1", str(agent.port), *[str(f) for f in files]]
                if tool == STORESCU
                else [tool, *args, "127.0.0.1", str(agent.port)],
                capture_output=True,
                text=True,
                env=dcmtk_env(),
                timeout=60,
                check=False,
            )

        assert dcmtk(ECHOSCU, "-aec", "LIVERAI", "-to", "5").returncode != 0  # plain TCP
        sent = dcmtk(STORESCU, *client)
        assert sent.returncode == 0, sent.stderr

        def studies() -> list[dict[str, object]]:
            answer = requests.get(
                f"https://localhost:{agent.http_port}/api/studies",
                headers={"Authorization": f"Bearer {agent.token}"},
                verify=str(pki.ca),
                timeout=10,
            )
            answer.raise_for_status()
            found: list[dict[str, object]] = answer.json()["studies"]
            return found

        listed = wait_until(studies, 20, "the study in the API")
        assert [s["study_instance_uid"] for s in listed] == [study]
        assert "(TLS)" in agent.log()
