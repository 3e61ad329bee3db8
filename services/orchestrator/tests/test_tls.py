"""TLS, mutual TLS and the client certificate check against the `mspid` header."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from backend_common.orchestrator import OrchestratorClient, PermissionDeniedError, UnavailableError
from backend_common.settings import OrchestratorSettings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standalone_orchestrator.config import TLSConfig
from standalone_orchestrator.testing import CHANNEL, ORG1, ORG2, Network

Fresh = Callable[..., Network]


class Authority:
    """A certificate authority writing PEM files into a directory."""

    def __init__(self, name: str, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            self._builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name}.pem"
        self.path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(
        subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(
        self, directory: Path, name: str, organization: str | None = None, server: bool = False
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
        if organization:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        builder = self._builder(
            x509.Name(attributes), self.certificate.subject, key.public_key()
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    server_ca = Authority("server-ca", tmp_path)
    cert, key = server_ca.issue(tmp_path, "server", server=True)
    organizations = tmp_path / "organizations"
    authorities = {}
    for organization in (ORG1, ORG2):
        (organizations / organization).mkdir(parents=True)
        authorities[organization] = Authority(f"{organization}-ca", organizations / organization)
    clients = {
        "org1": authorities[ORG1].issue(tmp_path, "org1", ORG1),
        "org2": authorities[ORG2].issue(tmp_path, "org2", ORG2),
        # Claims to be organization 1 but is issued by organization 2's authority.
        "impostor": authorities[ORG2].issue(tmp_path, "impostor", ORG1),
    }
    return {
        "server_ca": server_ca.path,
        "cert": cert,
        "key": key,
        "organizations": organizations,
        "clients": clients,
    }


def _client(
    net: Network, pki: dict[str, object], mspid: str = ORG1, certificate: str | None = None
) -> OrchestratorClient:
    fields: dict[str, object] = {
        "host": "127.0.0.1",
        "port": net.server.port,
        "max_attempts": 1,
        "timeout_seconds": 5,
        "tls_enabled": True,
        "tls_server_cacert_path": str(pki["server_ca"]),
    }
    if certificate is not None:
        cert, key = pki["clients"][certificate]  # type: ignore[index]
        fields.update(mtls_enabled=True, tls_client_cert_path=str(cert), tls_client_key_path=str(key))
    return OrchestratorClient(OrchestratorSettings(**fields), mspid, CHANNEL)  # type: ignore[arg-type]


def test_tls(fresh_orchestrator: Fresh, pki: dict[str, object]) -> None:
    net = fresh_orchestrator(register=False, tls=TLSConfig(cert=pki["cert"], key=pki["key"]))  # type: ignore[arg-type]
    with _client(net, pki) as client:
        assert client.query_version() == "dev"
    # A plaintext client cannot talk to a TLS server.
    with pytest.raises(UnavailableError):
        net.client().query_version()


def test_mutual_tls(fresh_orchestrator: Fresh, pki: dict[str, object]) -> None:
    tls = TLSConfig(cert=pki["cert"], key=pki["key"], mtls=True, client_ca_dir=pki["organizations"])  # type: ignore[arg-type]
    net = fresh_orchestrator(register=False, tls=tls)
    with _client(net, pki, certificate="org1") as client:
        assert client.query_version() == "dev"
    with _client(net, pki) as client, pytest.raises(UnavailableError):
        client.query_version()  # no client certificate


def test_client_certificate_must_match_the_mspid(fresh_orchestrator: Fresh, pki: dict[str, object]) -> None:
    tls = TLSConfig(
        cert=pki["cert"],  # type: ignore[arg-type]
        key=pki["key"],  # type: ignore[arg-type]
        mtls=True,
        client_ca_dir=pki["organizations"],  # type: ignore[arg-type]
        verify_client_msp_id=True,
    )
    net = fresh_orchestrator(register=False, tls=tls)
    with _client(net, pki, ORG1, "org1") as client:
        client.register_organization("")
    with _client(net, pki, ORG2, "org1") as client, pytest.raises(PermissionDeniedError) as error:
        client.query_version()
    assert "cannot find MSPID" in error.value.details
    with _client(net, pki, ORG1, "impostor") as client, pytest.raises(PermissionDeniedError) as error:
        client.query_version()
    assert "invalid issuer" in error.value.details
    with _client(net, pki, ORG2, "org2") as client:
        assert client.query_version() == "dev"
