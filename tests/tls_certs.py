"""Test PKI made with ``cryptography``: a CA, a server certificate for localhost/127.0.0.1,
a client certificate from the same CA, and an untrusted CA with a client certificate of its own."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class KeyPair:
    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: KeyPair
    client: KeyPair
    untrusted_ca: Path
    untrusted_client: KeyPair


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(
    folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> KeyPair:
    pair = KeyPair(folder / f"{stem}.crt", folder / f"{stem}.key")
    pair.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.private_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pair.private_key.chmod(0o600)
    return pair


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """Write the test PKI into ``folder`` (keys owner-only)."""
    folder.mkdir(parents=True, exist_ok=True)

    def authority(stem: str) -> tuple[Path, x509.Name, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(f"liver-agent test {stem}")
        cert = _certificate(f"liver-agent test {stem}", key, name, key, ca=True)
        return _write(folder, stem, cert, key).certificate, name, key

    def leaf(
        stem: str, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey, *, server: bool
    ) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(stem, key, issuer, issuer_key, ca=False, server=server)
        return _write(folder, stem, cert, key)

    ca, ca_name, ca_key = authority("ca")
    other, other_name, other_key = authority("untrusted-ca")
    return Pki(
        ca=ca,
        server=leaf("server", ca_name, ca_key, server=True),
        client=leaf("client", ca_name, ca_key, server=False),
        untrusted_ca=other,
        untrusted_client=leaf("untrusted-client", other_name, other_key, server=False),
    )
