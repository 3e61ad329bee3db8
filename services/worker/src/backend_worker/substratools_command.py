"""The substratools command-line contract (compute-engine.md 10 and 11).

The function is run as `<python> -u <script> --function-name <name> @<argument file>`: the
entrypoint part comes from the Dockerfile, the argument file holds one argument per line (argparse
reads it with `@` as prefix, so every JSON value must fit on one line, which `json.dumps` ensures):

    --task-properties
    {"rank": 1}
    --inputs
    [{"id": "opener", "value": ".../__init__.py", "multiple": false}, ...]
    --outputs
    [{"id": "model", "value": ".../outputs/model", "multiple": false}]

Inputs are listed in task-input order, then asset position (the order `GetTaskInputAssets`
returns); `multiple` comes from the function's input declaration; outputs are never `multiple`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FunctionInput:
    identifier: str
    path: str
    multiple: bool


@dataclass(frozen=True)
class FunctionOutput:
    identifier: str
    path: str


def argument_lines(
    rank: int | None, inputs: Sequence[FunctionInput], outputs: Sequence[FunctionOutput]
) -> list[str]:
    input_list = [{"id": item.identifier, "value": item.path, "multiple": item.multiple} for item in inputs]
    output_list = [{"id": item.identifier, "value": item.path, "multiple": False} for item in outputs]
    lines = [
        "--task-properties",
        json.dumps({"rank": rank}),
        "--inputs",
        json.dumps(input_list),
        "--outputs",
        json.dumps(output_list),
    ]
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ValueError("an argument of the argument file spans several lines")
    return lines


def write_argument_file(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    path.chmod(0o444)
