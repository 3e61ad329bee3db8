"""Asset files from this organization's storage or from their owner's backend, always verified."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from backend_common.storage import DATASAMPLE_BUCKET, MODEL_BUCKET
from backend_worker.asset_sources import (
    ROLE_DATA_SAMPLE,
    ROLE_MODEL,
    ChecksumError,
    DownloadRefusedError,
    HttpPeerDownloader,
    directory_checksum,
)
from backend_worker.errors import PermanentError
from backend_worker.testing import BackendOrganization, PeerServer, data_sample_zip

ORG1, ORG2 = "MyOrg1MSP", "MyOrg2MSP"
MakeOrganization = Callable[..., BackendOrganization]


@pytest.fixture
def owner(make_organization: MakeOrganization) -> Iterator[tuple[BackendOrganization, PeerServer]]:
    peer = PeerServer(incoming={ORG1: "good-secret"}).start()
    organization = make_organization(ORG2, default_domain=peer.url)
    peer.owner = organization
    try:
        yield organization, peer
    finally:
        peer.stop()


def salted(data: bytes, salt: str) -> str:
    return hashlib.sha256(data + salt.encode()).hexdigest()


def test_model_download_from_its_owner(owner: tuple[BackendOrganization, PeerServer], tmp_path: Path) -> None:
    organization, peer = owner
    data = b"weights" * 1000
    organization.store("model-key", ROLE_MODEL, MODEL_BUCKET, "models/model-key/model", data)
    url = f"{peer.url}/model/model-key/file/"
    secrets = {ORG2: "good-secret"}
    downloader = HttpPeerDownloader(ORG1, secrets.get)
    destination = tmp_path / "model"
    downloader.download(
        url,
        owner=ORG2,
        channel="mychannel",
        destination=destination,
        checksum=salted(data, "task"),
        salt=b"task",
    )
    assert destination.read_bytes() == data
    assert peer.requests == [(ORG1, "mychannel", "/model/model-key/file/")]

    with pytest.raises(ChecksumError):
        downloader.download(
            url, owner=ORG2, channel="mychannel", destination=tmp_path / "bad", checksum="0" * 64
        )
    assert not (tmp_path / "bad").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(DownloadRefusedError) as refused:
        HttpPeerDownloader(ORG1, {ORG2: "wrong"}.get).download(
            url, owner=ORG2, channel="mychannel", destination=tmp_path / "x", checksum="0" * 64
        )
    assert refused.value.status == 401
    with pytest.raises(DownloadRefusedError) as gone:
        downloader.download(
            f"{peer.url}/model/unknown/file/",
            owner=ORG2,
            channel="mychannel",
            destination=tmp_path / "y",
            checksum="0",
        )
    assert gone.value.status == 410
    with pytest.raises(PermanentError, match="no outgoing credentials"):
        HttpPeerDownloader(ORG1, {}.get).download(
            url, owner=ORG2, channel="c", destination=tmp_path / "z", checksum=""
        )


def test_data_sample_checksum_is_the_directory_hash(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_bytes(b"one")
    (tmp_path / "b" / "c.txt").write_bytes(b"two")
    hashes = sorted(hashlib.sha256(content).hexdigest() for content in (b"one", b"two"))
    assert directory_checksum(tmp_path) == hashlib.sha256("".join(hashes).encode()).hexdigest()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ChecksumError):
        directory_checksum(tmp_path / "empty")


def test_data_samples_from_storage_are_extracted_and_verified(
    make_organization: MakeOrganization, tmp_path: Path
) -> None:
    organization = make_organization(ORG1)
    files = {"sample.json": b'{"x": 1}', "nested/extra.bin": b"\x00\x01"}
    organization.store(
        "sample-key", ROLE_DATA_SAMPLE, DATASAMPLE_BUCKET, "sample-key", data_sample_zip(files)
    )
    expected = directory_checksum(_write(tmp_path / "reference", files))
    sources = organization.context.sources
    sources.fetch_data_sample("sample-key", expected, tmp_path / "out", max_bytes=10**6)
    assert (tmp_path / "out" / "nested" / "extra.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ChecksumError):
        sources.fetch_data_sample("sample-key", "0" * 64, tmp_path / "out2", max_bytes=10**6)
    with pytest.raises(PermanentError):
        sources.fetch_data_sample("not-stored-here", expected, tmp_path / "out3", max_bytes=10**6)


def _write(directory: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return directory
