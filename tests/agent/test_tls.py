"""DICOM TLS (PS3.15 Annex B) and HTTPS: settings checks, the SCP against DCMTK ``echoscu`` /
``storescu`` with ``+tls``, delivery to a DCMTK ``storescp +tls``, and the HTTP API over HTTPS.

Certificates are made per test session with ``cryptography`` (tests/tls_certs.py).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import ValidationError
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from agent.cli import app as cli_app
from agent.context import AgentContext, open_context
from agent.delivery import send_dimse
from agent.errors import ExportError
from agent.scp import StorageSCP
from agent.settings import Destination, load_settings
from tests.factory import mr_dataset
from tests.integration.processes import (
    ECHOSCU,
    STORESCP,
    STORESCU,
    dcmtk_env,
    free_port,
    wait_for_port,
    wait_until,
)
from tests.tls_certs import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _scp_tls(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "certificate": str(pki.server.certificate),
        "private_key": str(pki.server.private_key),
        "ca_bundle": str(pki.ca),
        "require_client_certificate": True,
        **extra,
    }


# settings -----------------------------------------------------------------------------------


def test_tls_settings_are_checked_when_they_load(pki: Pki, tmp_path: Path) -> None:
    good = load_settings(None, dicom={"tls": _scp_tls(pki)})
    assert good.dicom.tls.require_client_certificate
    with pytest.raises(ValidationError, match="does not match certificate"):
        load_settings(None, dicom={"tls": _scp_tls(pki, private_key=str(pki.client.private_key))})
    with pytest.raises(ValidationError, match="does not exist"):
        load_settings(None, dicom={"tls": _scp_tls(pki, ca_bundle=str(tmp_path / "none.pem"))})
    with pytest.raises(ValidationError, match="needs a ca_bundle"):
        load_settings(None, dicom={"tls": _scp_tls(pki, ca_bundle=None)})
    with pytest.raises(ValidationError, match="certificate and private_key are both needed"):
        load_settings(None, http={"tls": {"enabled": True}})
    with pytest.raises(ValidationError, match="tls is for DICOM nodes"):
        Destination(name="web", stow_url="https://pacs/dicom-web", tls={"enabled": True})
    # switched off, nothing is read (the example config names files that need not exist)
    assert not load_settings(None, http={"tls": {"certificate": "/nowhere.pem"}}).http.tls.enabled


def test_a_private_key_others_may_read_is_warned_about(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = tmp_path / "open.key"
    key.write_bytes(pki.server.private_key.read_bytes())
    key.chmod(0o644)
    load_settings(None, dicom={"tls": _scp_tls(pki, private_key=str(key))})
    assert "may be read by group or others" in caplog.text
    caplog.clear()
    key.chmod(0o600)
    load_settings(None, dicom={"tls": _scp_tls(pki, private_key=str(key))})
    assert "may be read" not in caplog.text


def test_config_check_rejects_a_mismatched_key_and_prints_no_secret(
    pki: Pki, tmp_path: Path
) -> None:
    config = tmp_path / "agent.yaml"
    tls = _scp_tls(pki, private_key_password="s3cret-key-pass")
    config.write_text(json.dumps({"dicom": {"tls": tls}}))  # JSON is YAML
    # an unencrypted key with a password still loads (OpenSSL ignores it)
    result = CliRunner().invoke(cli_app, ["config", "check", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "s3cret-key-pass" not in result.output
    assert json.loads(result.stdout)["dicom"]["tls"]["private_key_password"] == "**********"
    tls["private_key"] = str(pki.client.private_key)
    config.write_text(json.dumps({"dicom": {"tls": tls}}))
    result = CliRunner().invoke(cli_app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2
    assert "does not match certificate" in result.output


# the SCP ------------------------------------------------------------------------------------


@pytest.fixture
def tls_scp(pki: Pki, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StorageSCP]:
    extra = getattr(request, "param", {})
    settings = load_settings(
        None,
        database={"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        spool={"path": tmp_path / "spool", "min_free_mb": 0},
        dicom={
            "host": "127.0.0.1",
            "port": free_port(),
            "max_associations": 4,
            "acse_timeout": 5.0,
            "network_timeout": 5.0,
            "tls": _scp_tls(pki, **extra),
        },
    )
    ctx: AgentContext = open_context(settings)
    server = StorageSCP(settings.dicom, ctx.ingestor, ctx.metrics)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        ctx.ingestor.close()
        ctx.engine.dispose()


_TIMEOUTS = ("-aec", "LIVERAI", "-to", "5", "-ta", "5", "-td", "5")


def _dcmtk(
    tool: str, port: int, *args: str, files: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, *_TIMEOUTS, *args, "127.0.0.1", str(port), *files],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        timeout=60,
        check=False,
    )


def _tls_args(pair: Any, ca: Path) -> list[str]:
    return ["+tls", str(pair.private_key), str(pair.certificate), "-pw", "+cf", str(ca)]


@pytest.mark.integration
def test_echoscu_and_storescu_over_tls(tls_scp: StorageSCP, pki: Pki, tmp_path: Path) -> None:
    echo = _dcmtk(ECHOSCU, tls_scp.port, *_tls_args(pki.client, pki.ca))
    assert echo.returncode == 0, echo.stderr
    study = generate_uid()
    ds = mr_dataset(study_uid=study, series_uid=generate_uid())
    path = tmp_path / "one.dcm"
    ds.save_as(path, enforce_file_format=True)
    store = _dcmtk(STORESCU, tls_scp.port, *_tls_args(pki.client, pki.ca), files=(str(path),))
    assert store.returncode == 0, store.stderr
    assert list((tmp_path / "spool").rglob(f"{ds.SOPInstanceUID}*")), "not in the spool"


@pytest.mark.integration
def test_plain_tcp_and_untrusted_clients_are_refused_and_the_scp_lives_on(
    tls_scp: StorageSCP, pki: Pki
) -> None:
    plain = _dcmtk(ECHOSCU, tls_scp.port)
    assert plain.returncode != 0
    untrusted = _dcmtk(ECHOSCU, tls_scp.port, *_tls_args(pki.untrusted_client, pki.ca))
    assert untrusted.returncode != 0
    anonymous = _dcmtk(ECHOSCU, tls_scp.port, "+tla", "+cf", str(pki.ca))
    assert anonymous.returncode != 0, "a client without certificate got in"
    failed = tls_scp.metrics.associations_rejected.labels("tls_handshake_failed")._value.get()
    assert failed >= 3
    echo = _dcmtk(ECHOSCU, tls_scp.port, *_tls_args(pki.client, pki.ca))
    assert echo.returncode == 0, echo.stderr


def _handshake(port: int, pki: Pki, version: ssl.TLSVersion) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer old versions
    with warnings.catch_warnings():  # TLSv1_1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    context.load_verify_locations(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client.certificate), str(pki.client.private_key))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() is not None


@pytest.mark.integration
def test_tls_older_than_1_2_is_refused(tls_scp: StorageSCP, pki: Pki) -> None:
    _handshake(tls_scp.port, pki, ssl.TLSVersion.TLSv1_2)  # the client itself works
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):  # the server's alert
        _handshake(tls_scp.port, pki, ssl.TLSVersion.TLSv1_1)


@pytest.mark.integration
@pytest.mark.parametrize("tls_scp", [{"handshake_timeout": 5.0}], indirect=True)
def test_a_silent_client_does_not_block_others_and_is_cut_off(
    tls_scp: StorageSCP, pki: Pki
) -> None:
    silent = [socket.create_connection(("127.0.0.1", tls_scp.port), timeout=10) for _ in range(2)]
    try:
        start = time.monotonic()
        echo = _dcmtk(ECHOSCU, tls_scp.port, *_tls_args(pki.client, pki.ca))
        took = time.monotonic() - start
        assert echo.returncode == 0, echo.stderr
        # well under the 5 s handshake deadline: the echo did not wait for the silent ones
        assert took < 4.0, f"echo waited {took:.1f} s behind a silent TLS client"
        for sock in silent:  # closed by the handshake deadline
            assert sock.recv(1) == b""
        assert time.monotonic() - start < 10
    finally:
        for sock in silent:
            sock.close()
    timeouts = tls_scp.metrics.associations_rejected.labels("tls_handshake_timeout")
    # counted by each connection's thread right after its socket was shut down
    wait_until(lambda: timeouts._value.get() == 2, 5, "two handshake timeouts counted")


# delivery -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_delivery_to_storescp_over_tls(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    proc = subprocess.Popen(
        [STORESCP, "-aet", "DEST", "-od", str(received), *_tls_args(pki.server, pki.ca), str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 20, proc)
        ds = mr_dataset(study_uid=generate_uid(), series_uid=generate_uid())
        path = tmp_path / "out.dcm"
        ds.save_as(path, enforce_file_format=True)
        tls = {
            "enabled": True,
            "ca_bundle": str(pki.ca),
            "certificate": str(pki.client.certificate),
            "private_key": str(pki.client.private_key),
        }
        dest = Destination(name="pacs", ae_title="DEST", host="127.0.0.1", port=port, tls=tls)
        sent = send_dimse(dest, [path], calling_ae="LIVERAI", timeout=10)
        assert sent == [str(ds.SOPInstanceUID)]
        assert len(list(received.iterdir())) == 1
        # a destination whose certificate we do not trust is not sent to
        distrust = Destination(
            name="pacs",
            ae_title="DEST",
            host="127.0.0.1",
            port=port,
            tls={**tls, "ca_bundle": str(pki.untrusted_ca)},
        )
        with pytest.raises(ExportError, match="TLS handshake failed"):
            send_dimse(distrust, [path], calling_ae="LIVERAI", timeout=10)
        assert len(list(received.iterdir())) == 1
    finally:
        proc.terminate()
        proc.wait(10)


# HTTPS --------------------------------------------------------------------------------------


def test_https_api_answers_with_the_token(pki: Pki, tmp_path: Path) -> None:
    from agent.http.server import HttpServer

    port = free_port()
    token = "https-test-token-123"
    config = tmp_path / "agent.yaml"
    groups = {
        "database": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        "spool": {"path": str(tmp_path / "spool"), "min_free_mb": 0},
        "worker": {"threads": 0},
        "http": {
            "port": port,
            "token": token,
            "tls": {
                "enabled": True,
                "certificate": str(pki.server.certificate),
                "private_key": str(pki.server.private_key),
            },
        },
    }
    config.write_text(json.dumps(groups))
    ctx = open_context(load_settings(config))
    server = HttpServer(ctx)
    server.start()
    try:
        url = f"https://localhost:{port}/api/jobs"
        answer = requests.get(
            url, headers={"Authorization": f"Bearer {token}"}, verify=str(pki.ca), timeout=10
        )
        assert answer.status_code == 200
        assert "jobs" in answer.json()
        refused = requests.get(url, verify=str(pki.ca), timeout=10)
        assert refused.status_code == 401
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, verify=str(pki.untrusted_ca), timeout=10)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://localhost:{port}/api/jobs", timeout=10)
        # `liver-agent health` asks the running agent over HTTPS (its own certificate pinned)
        health = CliRunner().invoke(cli_app, ["health", "--json", "--config", str(config)])
        checks = {c["name"]: c for c in json.loads(health.stdout)["checks"]}
        assert checks["agent"]["ok"] is True, checks["agent"]
        assert checks["agent"]["detail"].startswith("running, answers at https://")
        _handshake(port, pki, ssl.TLSVersion.TLSv1_2)
        # asyncio's TLS either alerts (protocol version) or just closes the connection
        with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNEXPECTED_EOF"):
            _handshake(port, pki, ssl.TLSVersion.TLSv1_1)
    finally:
        server.stop()
        ctx.ingestor.close()
        ctx.engine.dispose()
