"""Generate (or check) the Python stubs of the orchestrator contract.

    python -m backend_common.protos_build generate <proto dir> <output package dir>
    python -m backend_common.protos_build check <proto dir> <output package dir>

The proto directory is the only include root (plus grpc_tools' bundled well-known types) so the
registered descriptor names are the bare file names (`computetask.proto`), as in the reference
backend. protoc emits bare `import x_pb2` lines; they are rewritten into package-relative imports so
the stubs live in a package. Type stubs (`_pb2.pyi`, `_pb2_grpc.pyi`) come from mypy-protobuf.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INIT_CONTENT = '"""Generated orchestrator stubs: run `make protos` after changing `protos/`."""\n'

# Every file the generator owns in the output directory.
_GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


class ProtocError(RuntimeError):
    """protoc (or one of its plugins) failed."""


def proto_files(proto_dir: Path) -> list[str]:
    """The `.proto` files of the directory, as names relative to it (the descriptor names)."""
    names = sorted(path.name for path in proto_dir.glob("*.proto"))
    if not names:
        raise FileNotFoundError(f"no .proto file in {proto_dir}")
    return names


def _plugin(name: str) -> str:
    # Installed next to the interpreter in a virtualenv; PATH may not include that directory.
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ProtocError(f"{name} not found: install mypy-protobuf (a dev dependency)")
    return found


def _protoc() -> Any:
    # grpc_tools is a dev dependency, so imported only when generating; it ships no type information.
    from grpc_tools import protoc  # type: ignore[import-untyped]  # noqa: PLC0415

    return protoc


def well_known_include() -> Path:
    """grpc_tools' bundled `google/protobuf/*.proto`."""
    return Path(_protoc().__file__).parent / "_proto"


def run_protoc(args: Sequence[str]) -> None:
    status = _protoc().main(["grpc_tools.protoc", *args])
    if status != 0:
        raise ProtocError(f"protoc exited with status {status}")


def compile_protos(proto_dir: Path, out_dir: Path) -> None:
    """Run protoc with the Python, gRPC and mypy-protobuf generators into `out_dir`."""
    out = str(out_dir)
    run_protoc(
        [
            f"-I{proto_dir}",
            f"-I{well_known_include()}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out=quiet:{out}",
            f"--mypy_grpc_out=quiet:{out}",
            *proto_files(proto_dir),
        ]
    )


def write_descriptor_set(proto_dir: Path, output: Path) -> None:
    """Compile `proto_dir` into a serialized FileDescriptorSet (imports included)."""
    run_protoc(
        [
            f"-I{proto_dir}",
            f"-I{well_known_include()}",
            f"--descriptor_set_out={output}",
            "--include_imports",
            *proto_files(proto_dir),
        ]
    )


def relative_imports(source: str, local_modules: set[str]) -> str:
    """`import x_pb2 as y` -> `from . import x_pb2 as y`, for the modules generated here only."""

    def replace(match: re.Match[str]) -> str:
        module = match.group(2)
        if module not in local_modules:
            return match.group(0)
        return f"{match.group(1)}from . import {module}{match.group(3)}"

    return re.sub(r"^(\s*)import (\w+)( as \w+)?$", replace, source, flags=re.MULTILINE)


def _is_generated(name: str) -> bool:
    return name == "__init__.py" or name.endswith(_GENERATED_SUFFIXES)


def render(proto_dir: Path, out_dir: Path) -> None:
    """Write the final files (compiled, imports rewritten, `__init__.py`) into an empty `out_dir`."""
    compile_protos(proto_dir, out_dir)
    local_modules = {f"{Path(name).stem}_pb2" for name in proto_files(proto_dir)}
    for path in sorted(out_dir.iterdir()):
        if path.name.endswith(_GENERATED_SUFFIXES):
            path.write_text(relative_imports(path.read_text(), local_modules))
    (out_dir / "__init__.py").write_text(INIT_CONTENT)


def _generated_files(directory: Path) -> dict[str, bytes]:
    if not directory.is_dir():
        return {}
    return {
        path.name: path.read_bytes()
        for path in sorted(directory.iterdir())
        if path.is_file() and _is_generated(path.name)
    }


def generate(proto_dir: Path, out_dir: Path) -> list[str]:
    """Regenerate the stubs in `out_dir`, removing stale ones. Returns the names written."""
    with tempfile.TemporaryDirectory() as tmp:
        render(proto_dir, Path(tmp))
        fresh = _generated_files(Path(tmp))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in _generated_files(out_dir).keys() - fresh.keys():
        (out_dir / name).unlink()
    for name, content in fresh.items():
        (out_dir / name).write_bytes(content)
    return sorted(fresh)


def check(proto_dir: Path, out_dir: Path) -> list[str]:
    """Names of the files of `out_dir` that differ from a fresh generation (missing, stale or changed)."""
    with tempfile.TemporaryDirectory() as tmp:
        render(proto_dir, Path(tmp))
        fresh = _generated_files(Path(tmp))
    committed = _generated_files(out_dir)
    return sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend_common.protos_build", description=__doc__)
    parser.add_argument("command", choices=("generate", "check"))
    parser.add_argument("proto_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "generate":
        written = generate(args.proto_dir, args.out_dir)
        print(f"wrote {len(written)} files into {args.out_dir}")
        return 0
    differing = check(args.proto_dir, args.out_dir)
    if differing:
        print(f"stubs in {args.out_dir} are out of date with {args.proto_dir} (run `make protos`):")
        for name in differing:
            print(f"  {name}")
        return 1
    print(f"stubs in {args.out_dir} are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
