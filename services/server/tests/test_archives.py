"""Archive validation and the data-sample checksum (compute-engine 4.2), without the server."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest
from backend_server.archives import (
    ArchiveError,
    ArchiveLimits,
    check_function_archive,
    directory_checksum,
    inspect_archive,
    tar_directory,
)

LIMITS = ArchiveLimits(max_uncompressed_size=1024**3, max_compression_ratio=100, max_entries=100)


def reference_dirhash(directory: Path) -> str:
    """checksumdir's dirhash(sha256), as the reference computes it on the extracted archive."""
    hashes = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            hashes.append(hashlib.sha256((Path(root) / name).read_bytes()).hexdigest())
    digest = hashlib.sha256()
    for value in sorted(hashes):
        digest.update(value.encode())
    return digest.hexdigest()


def zip_of(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    buffer.seek(0)
    return buffer


def tar_of(entries: dict[str, bytes], links: dict[str, str] | None = None, mode: str = "w:gz") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    buffer.seek(0)
    return buffer


def test_directory_checksum_matches_the_reference_on_zip_and_tar(tmp_path: Path) -> None:
    entries = {
        "a.csv": b"1,2\n",
        "sub/b.csv": b"3,4\n",
        "sub/deeper/c.bin": os.urandom(1000),
        "z.txt": b"1,2\n",
    }
    for name, content in entries.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    expected = reference_dirhash(tmp_path)
    assert inspect_archive(zip_of(entries), LIMITS).directory_checksum == expected
    assert inspect_archive(tar_of(entries), LIMITS).directory_checksum == expected
    assert inspect_archive(tar_of(entries, mode="w"), LIMITS).directory_checksum == expected
    assert directory_checksum(tmp_path) == expected
    with tar_directory(tmp_path) as archive:
        assert inspect_archive(archive, LIMITS).directory_checksum == expected


def test_links_inside_the_tree_count_as_their_target() -> None:
    content = inspect_archive(tar_of({"data/a.csv": b"x"}, links={"data/link.csv": "a.csv"}), LIMITS)
    assert content.files["data/link.csv"] == content.files["data/a.csv"]


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (zip_of({"../evil.py": b"x"}), "path traversal"),
        (zip_of({"/etc/passwd": b"x"}), "absolute path"),
        (tar_of({"a/../../evil": b"x"}), "path traversal"),
        (tar_of({"ok": b"x"}, links={"escape": "../../etc/passwd"}), "link pointing out"),
        (tar_of({"ok": b"x"}, links={"escape": "/etc/passwd"}), "link pointing out"),
        (tar_of({"ok": b"x"}, links={"dangling": "missing"}), "dangling link"),
        (io.BytesIO(b"this is not an archive"), "neither a zip nor a tar"),
        (zip_of({}), "contains no file"),
    ],
)
def test_refused_archives(archive: io.BytesIO, message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        inspect_archive(archive, LIMITS).directory_checksum  # noqa: B018


def test_bombs_are_refused_by_ratio_and_size() -> None:
    bomb = zip_of({"zeros": b"\0" * (120 * 1024**2)})
    with pytest.raises(ArchiveError, match="compression ratio"):
        inspect_archive(bomb, LIMITS)
    small_limits = ArchiveLimits(max_uncompressed_size=1000, max_compression_ratio=1000, max_entries=10)
    with pytest.raises(ArchiveError, match="expands beyond"):
        inspect_archive(zip_of({"data": os.urandom(2000)}, compression=zipfile.ZIP_STORED), small_limits)
    with pytest.raises(ArchiveError, match="more than 10 entries"):
        inspect_archive(zip_of({f"f{index}": b"x" for index in range(11)}), small_limits)


def test_function_archives_need_a_dockerfile() -> None:
    check_function_archive(inspect_archive(tar_of({"Dockerfile": b"FROM x", "function.py": b""}), LIMITS))
    with pytest.raises(ArchiveError, match="Dockerfile"):
        check_function_archive(inspect_archive(zip_of({"function.py": b"", "other.py": b""}), LIMITS))
    with pytest.raises(ArchiveError, match="at least two"):
        check_function_archive(inspect_archive(zip_of({"Dockerfile": b"FROM x"}), LIMITS))
    with tempfile.TemporaryFile() as spooled:
        spooled.write(zip_of({"Dockerfile": b"FROM x", "f.py": b""}).read())
        spooled.seek(0)
        assert inspect_archive(spooled, LIMITS).format == "zip"
