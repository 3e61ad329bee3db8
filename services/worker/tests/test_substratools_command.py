"""The argument file of the substratools contract (compute-engine.md 10 and 11)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from backend_worker.substratools_command import (
    FunctionInput,
    FunctionOutput,
    argument_lines,
    write_argument_file,
)


def test_argument_file_has_one_argument_per_line(tmp_path: Path) -> None:
    inputs = [
        FunctionInput("opener", "/t/inputs/openers/dm/__init__.py", False),
        FunctionInput("shared", "/t/inputs/models/m1", True),
        FunctionInput("shared", "/t/inputs/models/m2", True),
        FunctionInput("datasamples", "/t/inputs/data_samples/k1", True),
    ]
    lines = argument_lines(1, inputs, [FunctionOutput("perf", "/t/outputs/perf")])
    path = tmp_path / "arguments.txt"
    write_argument_file(path, lines)
    written = path.read_text().splitlines()
    assert written[0::2] == ["--task-properties", "--inputs", "--outputs"]
    assert json.loads(written[1]) == {"rank": 1}
    assert json.loads(written[3]) == [
        {"id": "opener", "value": "/t/inputs/openers/dm/__init__.py", "multiple": False},
        {"id": "shared", "value": "/t/inputs/models/m1", "multiple": True},
        {"id": "shared", "value": "/t/inputs/models/m2", "multiple": True},
        {"id": "datasamples", "value": "/t/inputs/data_samples/k1", "multiple": True},
    ]
    assert json.loads(written[5]) == [{"id": "perf", "value": "/t/outputs/perf", "multiple": False}]
    # substratools reads it with argparse's `@` prefix: exactly these arguments.
    parser = argparse.ArgumentParser(fromfile_prefix_chars="@")
    for option in ("--task-properties", "--inputs", "--outputs"):
        parser.add_argument(option)
    parsed = parser.parse_args([f"@{path}"])
    assert json.loads(parsed.inputs)[3]["value"].endswith("/k1")


def test_values_stay_on_their_line() -> None:
    lines = argument_lines(None, [FunctionInput("x", "/odd\nname", False)], [])
    assert len(lines) == 6 and all("\n" not in line for line in lines)
    assert json.loads(lines[3])[0]["value"] == "/odd\nname"
    assert json.loads(lines[1]) == {"rank": None}
