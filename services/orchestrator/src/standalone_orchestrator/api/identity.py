"""Who calls, on which channel (`orchestrator-grpc.md` 7).

The `mspid` header is the caller's identity and the `channel` header its data partition; the
organization must be a member of the channel in the configuration. With
`verify_client_msp_id`, the mspid must also appear in the Subject Organization of the client's
TLS certificate, and that certificate must be issued by a CA of `<client_ca_dir>/<mspid>/`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from standalone_orchestrator.errors import bad_request, internal, permission_denied, unknown

# What identification reads from a call, on the asyncio server (and the sync one alike).
Context = grpc.aio.ServicerContext[Any, Any] | grpc.ServicerContext


@dataclass(frozen=True)
class Caller:
    mspid: str
    channel: str
    request_id: str


def _certificates(path: Path) -> list[x509.Certificate]:
    data = path.read_bytes()
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return [x509.load_der_x509_certificate(data)]


def _subject_key_id(certificate: x509.Certificate) -> bytes:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest


class MspIdVerifier:
    """Checks the client certificate against the `mspid` header."""

    def __init__(self, ca_dir: Path) -> None:
        self.key_ids: dict[str, set[bytes]] = {}
        for organization_dir in sorted(path for path in ca_dir.iterdir() if path.is_dir()):
            ids = self.key_ids.setdefault(organization_dir.name, set())
            for path in sorted(organization_dir.iterdir()):
                if path.is_file():
                    ids.update(_subject_key_id(certificate) for certificate in _certificates(path))

    def verify(self, context: Context, mspid: str) -> None:
        # The leaf certificate of the peer, when the connection is (m)TLS.
        pems = cast(list[bytes], context.auth_context().get("x509_pem_cert") or [])
        if not pems:
            raise internal("invalid MSPID: failed to extract MSP ID from TLS context")
        certificate = x509.load_pem_x509_certificate(pems[0])
        organizations = [
            attribute.value
            for attribute in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        ]
        if mspid not in organizations:
            raise permission_denied(
                f'invalid MSPID: cannot find MSPID "{mspid}" in client TLS certificate Subject Organizations'
            )
        allowed = self.key_ids.get(mspid)
        if not allowed:
            raise permission_denied(f'invalid MSPID: cannot find MSPID "{mspid}" in allowed organizations')
        try:
            issuer_id = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        except x509.ExtensionNotFound:
            issuer_id = None
        if issuer_id is None or issuer_id.key_identifier not in allowed:
            raise permission_denied(f'invalid MSPID: invalid issuer for MSPID "{mspid}"')


class Identity:
    def __init__(
        self, organization_channels: Mapping[str, frozenset[str]], verifier: MspIdVerifier | None = None
    ) -> None:
        self.organization_channels = organization_channels
        self.verifier = verifier

    def identify(self, context: Context) -> Caller:
        """The caller, or an error: FAILED_PRECONDITION for the mspid, UNKNOWN for the channel."""
        headers: dict[str, list[str]] = {}
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, str):
                headers.setdefault(key, []).append(value)
        mspids = headers.get("mspid", [])
        if len(mspids) != 1:
            raise bad_request("missing or invalid header 'mspid'")
        mspid = mspids[0]
        if self.verifier is not None:
            self.verifier.verify(context, mspid)
        channels = headers.get("channel", [])
        if len(channels) != 1:
            raise unknown("missing or invalid header 'channel'")
        channel = channels[0]
        allowed = self.organization_channels.get(mspid)
        if allowed is None:
            raise unknown(f'organization "{mspid}" is unknown')
        if channel not in allowed:
            raise unknown(f'organization "{mspid}" has not access to channel "{channel}"')
        request_ids = headers.get("reqid", [])
        return Caller(mspid, channel, request_ids[0] if request_ids else uuid.uuid4().hex[:8])
