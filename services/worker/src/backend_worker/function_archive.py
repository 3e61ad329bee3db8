"""Function archives: safe unpacking (tar of any compression, or zip) and the Dockerfile ENTRYPOINT.

Archives come from users: entries must stay inside the destination (no absolute paths, no `..`, no
links leaving the tree, no device files) and the unpacked size is bounded, so a crafted archive can
neither write elsewhere nor fill the disk.
"""

from __future__ import annotations

import gzip
import json
import re
import shlex
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from backend_worker.errors import BuildError

DOCKERFILE = "Dockerfile"
MAX_ENTRIES = 100_000


class UnsafeArchiveError(ValueError):
    """The archive is not a function archive this worker accepts."""


def _check_member_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not name or "\x00" in name:
        raise UnsafeArchiveError(f"unsafe path in archive: {name!r}")
    return path


def _unpack_tar(archive: Path, destination: Path, max_bytes: int) -> None:
    with tarfile.open(archive, mode="r:*") as tar:
        members = tar.getmembers()
        if len(members) > MAX_ENTRIES:
            raise UnsafeArchiveError(f"archive has more than {MAX_ENTRIES} entries")
        total = 0
        for member in members:
            _check_member_name(member.name)
            if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                raise UnsafeArchiveError(f"unsupported entry type in archive: {member.name!r}")
            total += max(member.size, 0)
            if total > max_bytes:
                raise UnsafeArchiveError(f"archive unpacks to more than {max_bytes} bytes")
        # The "data" filter refuses links pointing outside the destination and strips special bits.
        tar.extractall(destination, members=members, filter="data")


def _unpack_zip(archive: Path, destination: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zip_file:
        infos = zip_file.infolist()
        if len(infos) > MAX_ENTRIES:
            raise UnsafeArchiveError(f"archive has more than {MAX_ENTRIES} entries")
        total = 0
        for info in infos:
            path = _check_member_name(info.filename)
            mode = info.external_attr >> 16
            if mode and stat.S_ISLNK(mode):
                raise UnsafeArchiveError(
                    f"symbolic links are not accepted in zip archives: {info.filename!r}"
                )
            total += info.file_size
            if total > max_bytes:
                raise UnsafeArchiveError(f"archive unpacks to more than {max_bytes} bytes")
            target = destination.joinpath(*path.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            # Sizes in the zip directory are declared by the archive: count the real bytes too.
            with zip_file.open(info) as source, target.open("wb") as sink:
                while chunk := source.read(1024 * 1024):
                    written += len(chunk)
                    if written > info.file_size or total - info.file_size + written > max_bytes:
                        raise UnsafeArchiveError(f"entry {info.filename!r} is larger than declared")
                    sink.write(chunk)
            if mode & 0o111:
                target.chmod(0o755)


def unpack_archive(archive: Path, destination: Path, *, max_bytes: int) -> None:
    """Unpack a tar (any compression) or zip archive into the empty or missing `destination`.

    Raises `UnsafeArchiveError` for anything that is not a safe, bounded archive.
    """
    destination.mkdir(parents=True, exist_ok=True)
    try:
        # Tar first, then zip: the order of the reference (rest-api.md 6).
        if tarfile.is_tarfile(archive):
            _unpack_tar(archive, destination, max_bytes)
        elif zipfile.is_zipfile(archive):
            _unpack_zip(archive, destination, max_bytes)
        else:
            raise UnsafeArchiveError("the file is neither a tar nor a zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise UnsafeArchiveError(f"corrupt archive: {error}") from error


@dataclass(frozen=True)
class FunctionEntrypoint:
    """The command of a function, from its Dockerfile ENTRYPOINT.

    `entrypoint` is the whole list as written; `script` the Python file it runs (relative to the
    image's working directory, i.e. the archive root) and `arguments` what follows the script
    (`--function-name <name>`).
    """

    entrypoint: tuple[str, ...]
    script: str
    arguments: tuple[str, ...]

    @property
    def function_name(self) -> str | None:
        arguments = list(self.arguments)
        for index, argument in enumerate(arguments[:-1]):
            if argument == "--function-name":
                return arguments[index + 1]
        return None


_INSTRUCTION = re.compile(r"^\s*ENTRYPOINT\s+(?P<value>.*)$", re.IGNORECASE)


def _logical_lines(text: str) -> list[str]:
    """Dockerfile lines with backslash continuations joined and comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse_entrypoint(dockerfile_text: str) -> FunctionEntrypoint:
    """The function command of a Dockerfile: its last ENTRYPOINT, as Docker applies it.

    The exec (JSON list) form is the one the reference supports; a shell form is split like a shell
    would, as the SDK's subprocess mode tolerates it. The entrypoint must run a `.py` script and
    carry `--function-name <name>`, which substratools needs to pick the function.
    """
    values = [
        match.group("value").strip()
        for line in _logical_lines(dockerfile_text)
        if (match := _INSTRUCTION.match(line))
    ]
    if not values:
        raise ValueError("the Dockerfile has no ENTRYPOINT")
    value = values[-1]
    tokens: list[str]
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"ENTRYPOINT is not a valid JSON list: {value}") from error
        if not isinstance(parsed, list) or not all(isinstance(token, str) for token in parsed):
            raise ValueError(f"ENTRYPOINT must be a list of strings: {value}")
        tokens = parsed
    else:
        tokens = shlex.split(value)
    scripts = [index for index, token in enumerate(tokens) if token.endswith(".py")]
    if not scripts:
        raise ValueError(f"ENTRYPOINT does not run a Python script: {value}")
    script_index = scripts[0]
    entrypoint = FunctionEntrypoint(
        entrypoint=tuple(tokens),
        script=tokens[script_index],
        arguments=tuple(tokens[script_index + 1 :]),
    )
    if entrypoint.function_name is None:
        raise ValueError(f'ENTRYPOINT must pass "--function-name", "<name>": {value}')
    return entrypoint


def script_path(code_dir: Path, entrypoint: FunctionEntrypoint) -> str:
    """The script relative to the code directory (an absolute path means the image's WORKDIR)."""
    script = PurePosixPath(entrypoint.script)
    candidates = [script] if not script.is_absolute() else []
    candidates.append(PurePosixPath(script.name))
    for candidate in candidates:
        if ".." in candidate.parts:
            continue
        if (code_dir / candidate).is_file():
            return str(candidate)
    raise ValueError(f"the ENTRYPOINT script {entrypoint.script!r} is not in the archive")


def unpack_function(archive: Path, code_dir: Path, *, max_bytes: int) -> FunctionEntrypoint:
    """Unpack a function archive and read its command; any problem is the user's `BuildError`."""
    if code_dir.exists():
        shutil.rmtree(code_dir)
    try:
        unpack_archive(archive, code_dir, max_bytes=max_bytes)
        dockerfile = code_dir / DOCKERFILE
        if not dockerfile.is_file():
            raise ValueError("the archive has no Dockerfile at its root")
        entrypoint = parse_entrypoint(dockerfile.read_text(encoding="utf-8", errors="replace"))
        script_path(code_dir, entrypoint)
    except (UnsafeArchiveError, ValueError) as error:
        raise BuildError(
            f"invalid function archive: {error}", logs=f"Invalid function archive: {error}\n"
        ) from error
    return entrypoint
