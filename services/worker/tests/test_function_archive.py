"""Function archives: safe unpacking of zip and tar archives, and the Dockerfile ENTRYPOINT."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from backend_worker.errors import BuildError
from backend_worker.function_archive import (
    UnsafeArchiveError,
    parse_entrypoint,
    unpack_archive,
    unpack_function,
)
from backend_worker.testing import sdk_function_archive


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def test_sdk_zip_and_tar_archives_unpack_with_their_entrypoint(tmp_path: Path) -> None:
    for archive_format in ("zip", "tar.gz"):
        archive = sdk_function_archive(tmp_path, "train", archive_format=archive_format)
        entrypoint = unpack_function(archive, tmp_path / archive_format, max_bytes=10**6)
        assert entrypoint.script == "function.py"
        assert entrypoint.function_name == "train"
        assert entrypoint.arguments == ("--function-name", "train")
        assert sorted(p.name for p in (tmp_path / archive_format).iterdir()) == ["Dockerfile", "function.py"]


def test_substrafl_archive_unpacks(tmp_path: Path, substrafl_archive: Path) -> None:
    entrypoint = unpack_function(substrafl_archive, tmp_path / "code", max_bytes=10**7)
    assert entrypoint.entrypoint == ("python3.11", "function.py", "--function-name", "avg_shared_states")
    assert (tmp_path / "code" / "substrafl_internal" / "cls_cloudpickle").is_file()
    assert (tmp_path / "code" / "requirements.txt").read_text().strip() == "substrafl==1.0.0"


@pytest.mark.parametrize("name", ["../escape.py", "/etc/escape.py", "a/../../escape.py"])
def test_path_traversal_is_refused(tmp_path: Path, name: str) -> None:
    zipped = tmp_path / "evil.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("Dockerfile", "ENTRYPOINT []")
        archive.writestr(name, "print('escaped')")
    with pytest.raises(UnsafeArchiveError):
        unpack_archive(zipped, tmp_path / "out-zip", max_bytes=10**6)
    tarred = make_tar(tmp_path / "evil.tar.gz", [(tarfile.TarInfo(name), b"print('escaped')")])
    with pytest.raises(UnsafeArchiveError):
        unpack_archive(tarred, tmp_path / "out-tar", max_bytes=10**6)
    assert not (tmp_path / "escape.py").exists()


def test_links_leaving_the_archive_and_devices_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("passwd")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    with pytest.raises(UnsafeArchiveError):
        unpack_archive(make_tar(tmp_path / "link.tar.gz", [(link, None)]), tmp_path / "a", max_bytes=10**6)
    hard = tarfile.TarInfo("shadow")
    hard.type = tarfile.LNKTYPE
    hard.linkname = "../../shadow"
    with pytest.raises(UnsafeArchiveError):
        unpack_archive(make_tar(tmp_path / "hard.tar.gz", [(hard, None)]), tmp_path / "b", max_bytes=10**6)
    device = tarfile.TarInfo("null")
    device.type = tarfile.CHRTYPE
    with pytest.raises(UnsafeArchiveError):
        unpack_archive(make_tar(tmp_path / "dev.tar.gz", [(device, None)]), tmp_path / "c", max_bytes=10**6)
    # A link staying inside the archive is fine.
    inside = tarfile.TarInfo("alias.py")
    inside.type = tarfile.SYMTYPE
    inside.linkname = "function.py"
    archive = make_tar(tmp_path / "ok.tar.gz", [(tarfile.TarInfo("function.py"), b"x = 1\n"), (inside, None)])
    unpack_archive(archive, tmp_path / "d", max_bytes=10**6)
    assert (tmp_path / "d" / "alias.py").read_text() == "x = 1\n"


def test_unpacked_size_is_bounded(tmp_path: Path) -> None:
    zipped = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big", b"\0" * 2_000_000)
    with pytest.raises(UnsafeArchiveError):
        unpack_archive(zipped, tmp_path / "out", max_bytes=1_000_000)


def test_not_an_archive_is_a_build_error(tmp_path: Path) -> None:
    path = tmp_path / "function.py"
    path.write_text("print('hello')")
    with pytest.raises(BuildError) as raised:
        unpack_function(path, tmp_path / "code", max_bytes=10**6)
    assert "neither a tar nor a zip" in raised.value.logs


def test_missing_dockerfile_or_entrypoint_is_a_build_error(tmp_path: Path) -> None:
    archive = sdk_function_archive(tmp_path, "train", dockerfile="FROM python:3.11\nCOPY . .\n")
    with pytest.raises(BuildError, match="ENTRYPOINT"):
        unpack_function(archive, tmp_path / "code", max_bytes=10**6)
    zipped = tmp_path / "nodockerfile.zip"
    with zipfile.ZipFile(zipped, "w") as archive_file:
        archive_file.writestr("function.py", "")
    with pytest.raises(BuildError, match="Dockerfile"):
        unpack_function(zipped, tmp_path / "code2", max_bytes=10**6)


def test_entrypoint_forms() -> None:
    exec_form = parse_entrypoint(
        'FROM x\nENTRYPOINT ["python3.11", "algo.py", "--function-name", "predict"]\n'
    )
    assert exec_form.script == "algo.py" and exec_form.function_name == "predict"
    # Continuation lines, comments, the last ENTRYPOINT wins, lowercase instruction.
    text = (
        "FROM x\n"
        'ENTRYPOINT ["python3", "old.py", "--function-name", "old"]\n'
        "# comment\n"
        'entrypoint ["python3", "function.py", \\\n   "--function-name",\\\n "train"]\n'
    )
    assert parse_entrypoint(text).entrypoint == ("python3", "function.py", "--function-name", "train")
    shell_form = parse_entrypoint("ENTRYPOINT python3 function.py --function-name score\n")
    assert shell_form.function_name == "score"
    with pytest.raises(ValueError, match="function-name"):
        parse_entrypoint('ENTRYPOINT ["python3", "function.py"]')
    with pytest.raises(ValueError, match="Python script"):
        parse_entrypoint('ENTRYPOINT ["/bin/run"]')
