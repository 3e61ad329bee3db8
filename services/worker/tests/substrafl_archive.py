"""Builds a function archive exactly as substrafl 1.0 does: `python substrafl_archive.py <dir>`.

Run by an interpreter that has substrafl (the tests' base environment). The function averages the
`shared` states of its parents (an aggregation with several inputs under one identifier), like
substrafl's FedAvg aggregation node.
"""

from __future__ import annotations

import sys
from pathlib import Path

from substrafl.dependency import Dependency
from substrafl.remote.decorators import remote
from substrafl.remote.register.register import _create_substra_function_files


class Averager:
    def __init__(self, *args: object, **kwargs: object) -> None:
        self.args = args
        self.kwargs = kwargs

    @remote
    def avg_shared_states(self, shared_states: list[dict[str, float]]) -> dict[str, float]:
        count = len(shared_states)
        return {"value": sum(state["value"] for state in shared_states) / count, "count": count}


def main() -> None:
    destination = Path(sys.argv[1])
    destination.mkdir(parents=True, exist_ok=True)
    operation = Averager().avg_shared_states(shared_states=[])
    archive, _ = _create_substra_function_files(
        operation.remote_struct,
        install_libraries=True,
        dependencies=Dependency(editable_mode=False),
        operation_dir=destination,
    )
    print(archive)


if __name__ == "__main__":
    main()
