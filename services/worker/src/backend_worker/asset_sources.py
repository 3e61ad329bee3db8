"""Where the worker gets asset files: this organization's object storage, or the owner's backend.

Files this organization holds are recorded in `stored_files` (asset key + role) and read from object
storage (or from server media for data samples registered by path). Files of other organizations
are downloaded from their backend (`rest-api.md` 7): HTTP Basic with this organization's id and the
outgoing secret for the owner, `Substra-Channel-Name`, streamed. Every file is verified against the
checksum registered on the orchestrator before it is used (models salted with the producing task's
key; data samples by their directory hash).
"""

from __future__ import annotations

import abc
import base64
import hashlib
import http.client
import os
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backend_common.db.local import OutgoingOrganization, StoredFile
from backend_common.storage import ChecksumMismatchError, ObjectStorage
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend_worker.errors import PermanentError
from backend_worker.function_archive import UnsafeArchiveError, unpack_archive

CHUNK_SIZE = 1024 * 1024
ACCEPT = "application/json;version=0.0"

# Roles of `stored_files` rows (libs/common db.local.StoredFile).
ROLE_FUNCTION_ARCHIVE = "function_archive"
ROLE_OPENER = "opener"
ROLE_DATA_SAMPLE = "data_sample"
ROLE_MODEL = "model"
ROLE_LOGS = "logs"
ROLE_FUNCTION_IMAGE = "function_image"


class ChecksumError(Exception):
    """A fetched file does not match its registered checksum (nothing is kept; retried)."""


class DownloadRefusedError(PermanentError):
    """The owner's backend answered with a client error (403, 404, 410...): retrying will not help."""

    def __init__(self, url: str, status: int, body: str) -> None:
        super().__init__(f"GET {url} answered {status}: {body[:500]}")
        self.status = status


def file_checksum(path: Path, salt: bytes = b"") -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            digest.update(chunk)
    digest.update(salt)
    return digest.hexdigest()


def directory_checksum(path: Path) -> str:
    """The data-sample checksum (compute-engine.md 4.2): sha256 of the sorted file hashes."""
    hashes: list[str] = []
    for directory, subdirectories, files in os.walk(path):
        subdirectories.sort()
        hashes.extend(file_checksum(Path(directory, name)) for name in sorted(files))
    if not hashes:
        raise ChecksumError(f"data sample folder {path} is empty")
    return hashlib.sha256("".join(sorted(hashes)).encode()).hexdigest()


class PeerDownloader(abc.ABC):
    """Downloads a file from another organization's backend."""

    @abc.abstractmethod
    def download(
        self, url: str, *, owner: str, channel: str, destination: Path, checksum: str, salt: bytes = b""
    ) -> None:
        """Write the file at `destination`, only once complete and matching `checksum`."""


class HttpPeerDownloader(PeerDownloader):
    def __init__(
        self,
        organization_id: str,
        secret_for: Callable[[str], str | None],
        *,
        timeout: float = 30.0,
    ) -> None:
        self.organization_id = organization_id
        self._secret_for = secret_for
        self.timeout = timeout
        self._ssl_context = ssl.create_default_context()

    def _request(self, url: str, owner: str, channel: str) -> urllib.request.Request:
        if not url.startswith(("http://", "https://")):
            raise PermanentError(f"cannot download {url!r}: not an HTTP address")
        secret = self._secret_for(owner)
        if secret is None:
            raise PermanentError(f"no outgoing credentials for organization {owner!r}")
        token = base64.b64encode(f"{self.organization_id}:{secret}".encode()).decode()
        return urllib.request.Request(  # noqa: S310  (scheme checked above)
            url,
            headers={
                "Authorization": f"Basic {token}",
                "Accept": ACCEPT,
                "Substra-Channel-Name": channel,
            },
        )

    def _open(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        response = urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl_context)  # noqa: S310
        assert isinstance(response, http.client.HTTPResponse)
        return response

    def download(
        self, url: str, *, owner: str, channel: str, destination: Path, checksum: str, salt: bytes = b""
    ) -> None:
        request = self._request(url, owner, channel)
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=destination.parent, prefix=".download-")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as file:
                try:
                    response = self._open(request)
                except urllib.error.HTTPError as error:
                    body = error.read(2000).decode(errors="replace")
                    if 400 <= error.code < 500:
                        raise DownloadRefusedError(url, error.code, body) from error
                    raise
                with response:
                    while chunk := response.read(CHUNK_SIZE):
                        digest.update(chunk)
                        file.write(chunk)
            digest.update(salt)
            if digest.hexdigest() != checksum.lower():
                raise ChecksumError(f"{url}: checksum {digest.hexdigest()}, expected {checksum}")
            os.chmod(temporary, 0o644)
            os.replace(temporary, destination)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def outgoing_secrets(sessions: sessionmaker[Session]) -> Callable[[str], str | None]:
    def secret_for(organization_id: str) -> str | None:
        with sessions() as session:
            row = session.get(OutgoingOrganization, organization_id)
            return row.secret if row is not None else None

    return secret_for


@dataclass
class AssetSources:
    organization_id: str
    storage: ObjectStorage
    sessions: sessionmaker[Session]
    peers: PeerDownloader

    def stored_file(self, asset_key: str, role: str) -> StoredFile | None:
        with self.sessions() as session:
            return session.scalars(
                select(StoredFile).where(StoredFile.asset_key == asset_key, StoredFile.role == role)
            ).first()

    def fetch_file(
        self,
        *,
        asset_key: str,
        role: str,
        owner: str,
        address: str,
        channel: str,
        checksum: str,
        destination: Path,
        salt: bytes = b"",
    ) -> None:
        """Write a verified copy of an asset file at `destination`."""
        if owner == self.organization_id:
            stored = self.stored_file(asset_key, role)
            if stored is not None:
                self._fetch_stored(stored, destination, checksum, salt)
                return
        # Another organization's file, or one of ours kept by another of our services: ask the owner.
        self.peers.download(
            address, owner=owner, channel=channel, destination=destination, checksum=checksum, salt=salt
        )

    def _fetch_stored(self, stored: StoredFile, destination: Path, checksum: str, salt: bytes) -> None:
        if stored.path:
            shutil.copyfile(stored.path, destination)
            if file_checksum(destination, salt) != checksum.lower():
                destination.unlink()
                raise ChecksumError(f"{stored.path} does not match checksum {checksum}")
            return
        try:
            self.storage.download_to_file(
                stored.bucket, stored.object_key, destination, checksum, checksum_salt=salt
            )
        except ChecksumMismatchError as error:
            raise ChecksumError(str(error)) from error

    def fetch_data_sample(self, key: str, checksum: str, destination: Path, *, max_bytes: int) -> None:
        """Extract the sample's folder at `destination` and verify its directory checksum."""
        stored = self.stored_file(key, ROLE_DATA_SAMPLE)
        if stored is None:
            raise PermanentError(f"data sample {key} is not stored by this organization")
        source = Path(stored.path) if stored.path else None
        try:
            if source is not None and source.is_dir():
                shutil.copytree(source, destination, symlinks=False)
            else:
                with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".sample-") as scratch:
                    archive = Path(scratch) / "archive"
                    if source is not None:
                        shutil.copyfile(source, archive)
                    else:
                        self.storage.download_to_file(stored.bucket, stored.object_key, archive)
                    unpack_archive(archive, destination, max_bytes=max_bytes)
        except UnsafeArchiveError as error:
            raise PermanentError(f"data sample {key}: {error}") from error
        actual = directory_checksum(destination)
        if actual != checksum.lower():
            raise ChecksumError(f"data sample {key}: checksum {actual}, expected {checksum}")
