"""The `.proto` files of `protos/` against the reference contract (`orchestrator-contract.json`).

`protos/` is compiled to a descriptor set, converted to the structure of the JSON file and compared
message by message, field by field, RPC by RPC and enum value by enum value. What the JSON does not
carry (file layout, imports, reserved ranges, the deprecated option) is checked against
`orchestrator-grpc.md` sections 1 to 4.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from backend_common import protos_build
from backend_common.protos import computetask_pb2, event_pb2, performance_pb2
from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_DIR = REPO_ROOT / "protos"
STUBS_DIR = REPO_ROOT / "libs" / "common" / "src" / "backend_common" / "protos"
# CI clones the repository with a copy of shared/ beside it.
CONTRACT_PATH = REPO_ROOT.parent / "shared" / "spec" / "orchestrator-contract.json"

PACKAGE = "orchestrator"
GO_PACKAGE = "github.com/substra/orchestrator/lib/asset"
TIMESTAMP = "google/protobuf/timestamp.proto"

# Section 1: file -> imports.
EXPECTED_IMPORTS: dict[str, set[str]] = {
    "common.proto": set(),
    "organization.proto": {TIMESTAMP},
    "function.proto": {"common.proto", TIMESTAMP},
    "datamanager.proto": {"common.proto", TIMESTAMP},
    "datasample.proto": {TIMESTAMP},
    "dataset.proto": {"datamanager.proto"},
    "computeplan.proto": {TIMESTAMP},
    "computetask.proto": {"model.proto", "datamanager.proto", "datasample.proto", "common.proto", TIMESTAMP},
    "model.proto": {"common.proto", TIMESTAMP},
    "performance.proto": {TIMESTAMP},
    "failure_report.proto": {"common.proto", TIMESTAMP},
    "profiling.proto": {"google/protobuf/empty.proto"},
    "event.proto": {
        "function.proto",
        "common.proto",
        "computeplan.proto",
        "computetask.proto",
        "datamanager.proto",
        "datasample.proto",
        "failure_report.proto",
        "model.proto",
        "organization.proto",
        "performance.proto",
        "profiling.proto",
        TIMESTAMP,
    },
    "info.proto": set(),
}

# Sections 2 and 3: (reserved numbers, reserved names); every other message or enum reserves nothing.
EXPECTED_RESERVED: dict[str, tuple[set[int], set[str]]] = {
    "orchestrator.AssetKind": ({2}, {"ASSET_METRIC"}),
    "orchestrator.Function": ({3}, {"category"}),
    "orchestrator.NewFunction": ({3}, {"category"}),
    "orchestrator.Dataset": ({2, 3}, {"train_data_sample_keys", "test_data_sample_keys"}),
    "orchestrator.ComputePlan": (
        {3, 4, 5, 6, 8, 9, 10, 11, 12},
        {
            "waiting_count",
            "todo_count",
            "doing_count",
            "canceled_count",
            "failed_count",
            "done_count",
            "task_count",
            "status",
            "delete_intermediary_models",
        },
    ),
    "orchestrator.NewComputePlan": ({18}, {"delete_intermediary_models"}),
    "orchestrator.ComputeTask": (
        {2, 3, 6, 12, 13, 14, 15, 18},
        {
            "category",
            "function",
            "data",
            "test",
            "train",
            "composite",
            "aggregate",
            "parent_task_keys",
            "predict",
        },
    ),
    "orchestrator.NewComputeTask": (
        {2, 5, 12, 13, 14, 15, 18},
        {"category", "parent_task_keys", "data", "test", "train", "composite", "aggregate", "predict"},
    ),
    "orchestrator.TaskQueryFilter": ({3}, {"category"}),
    "orchestrator.Model": ({2}, {"category"}),
    "orchestrator.NewModel": ({2}, {"category"}),
}


# --- descriptor set -> contract structure -----------------------------------------------------------


def _field_entry(
    message: descriptor_pb2.DescriptorProto, field: descriptor_pb2.FieldDescriptorProto
) -> dict[str, Any]:
    label = descriptor_pb2.FieldDescriptorProto.Label.Name(field.label).removeprefix("LABEL_").lower()
    type_ = descriptor_pb2.FieldDescriptorProto.Type.Name(field.type).removeprefix("TYPE_").lower()
    oneof = message.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None
    return {
        "label": label,
        "name": field.name,
        "number": field.number,
        "oneof": oneof,
        "type": type_,
        "type_name": field.type_name.removeprefix("."),
    }


def _collect_messages(
    prefix: str, messages: Any, out: dict[str, list[dict[str, Any]]], enums: dict[str, dict[str, int]]
) -> None:
    for message in messages:
        full_name = f"{prefix}.{message.name}"
        out[full_name] = [_field_entry(message, field) for field in message.field]
        for enum in message.enum_type:
            enums[f"{full_name}.{enum.name}"] = {value.name: value.number for value in enum.value}
        _collect_messages(full_name, message.nested_type, out, enums)


def contract_of(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, Any]:
    """The structure of `orchestrator-contract.json` for the given files of package `orchestrator`."""
    enums: dict[str, dict[str, int]] = {}
    messages: dict[str, list[dict[str, Any]]] = {}
    services: dict[str, dict[str, dict[str, Any]]] = {}
    for file in files:
        prefix = file.package
        for enum in file.enum_type:
            enums[f"{prefix}.{enum.name}"] = {value.name: value.number for value in enum.value}
        _collect_messages(prefix, file.message_type, messages, enums)
        for service in file.service:
            services[f"{prefix}.{service.name}"] = {
                method.name: {
                    "client_streaming": method.client_streaming,
                    "input": method.input_type.removeprefix("."),
                    "output": method.output_type.removeprefix("."),
                    "server_streaming": method.server_streaming,
                }
                for method in service.method
            }
    return {"enums": enums, "messages": messages, "services": services}


# --- comparisons ------------------------------------------------------------------------------------


def enum_differences(expected: dict[str, dict[str, int]], actual: dict[str, dict[str, int]]) -> list[str]:
    problems = [f"enum {name} missing" for name in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected enum {name}" for name in sorted(actual.keys() - expected.keys())]
    for name in sorted(expected.keys() & actual.keys()):
        want, got = expected[name], actual[name]
        problems += [f"{name}: value {value} missing" for value in sorted(want.keys() - got.keys())]
        problems += [f"{name}: unexpected value {value}" for value in sorted(got.keys() - want.keys())]
        problems += [
            f"{name}.{value}: number {got[value]}, expected {want[value]}"
            for value in sorted(want.keys() & got.keys())
            if want[value] != got[value]
        ]
    return problems


def message_differences(
    expected: dict[str, list[dict[str, Any]]], actual: dict[str, list[dict[str, Any]]]
) -> list[str]:
    problems = [f"message {name} missing" for name in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected message {name}" for name in sorted(actual.keys() - expected.keys())]
    for name in sorted(expected.keys() & actual.keys()):
        want = {field["name"]: field for field in expected[name]}
        got = {field["name"]: field for field in actual[name]}
        problems += [f"{name}: field {field} missing" for field in sorted(want.keys() - got.keys())]
        problems += [f"{name}: unexpected field {field}" for field in sorted(got.keys() - want.keys())]
        for field in sorted(want.keys() & got.keys()):
            for attribute in sorted(want[field].keys() | got[field].keys()):
                if want[field].get(attribute) != got[field].get(attribute):
                    problems.append(
                        f"{name}.{field}: {attribute} is {got[field].get(attribute)!r},"
                        f" expected {want[field].get(attribute)!r}"
                    )
        declared = [field["name"] for field in actual[name]]
        reference = [field["name"] for field in expected[name]]
        if want.keys() == got.keys() and declared != reference:
            problems.append(f"{name}: fields declared in order {declared}, expected {reference}")
    return problems


def service_differences(
    expected: dict[str, dict[str, dict[str, Any]]], actual: dict[str, dict[str, dict[str, Any]]]
) -> list[str]:
    problems = [f"service {name} missing" for name in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected service {name}" for name in sorted(actual.keys() - expected.keys())]
    for name in sorted(expected.keys() & actual.keys()):
        want, got = expected[name], actual[name]
        problems += [f"{name}: RPC {rpc} missing" for rpc in sorted(want.keys() - got.keys())]
        problems += [f"{name}: unexpected RPC {rpc}" for rpc in sorted(got.keys() - want.keys())]
        for rpc in sorted(want.keys() & got.keys()):
            for attribute in sorted(want[rpc].keys() | got[rpc].keys()):
                if want[rpc].get(attribute) != got[rpc].get(attribute):
                    problems.append(
                        f"{name}/{rpc}: {attribute} is {got[rpc].get(attribute)!r},"
                        f" expected {want[rpc].get(attribute)!r}"
                    )
    return problems


def _report(problems: list[str]) -> str:
    return f"{len(problems)} difference(s) with the reference contract:\n  " + "\n  ".join(problems)


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    output = tmp_path_factory.mktemp("descriptors") / "orchestrator.pb"
    protos_build.write_descriptor_set(PROTO_DIR, output)
    return descriptor_pb2.FileDescriptorSet.FromString(output.read_bytes())


@pytest.fixture(scope="module")
def orchestrator_files(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> list[descriptor_pb2.FileDescriptorProto]:
    return [file for file in descriptor_set.file if file.package == PACKAGE]


@pytest.fixture(scope="module")
def actual(orchestrator_files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, Any]:
    return contract_of(orchestrator_files)


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    assert CONTRACT_PATH.is_file(), f"reference contract not found at {CONTRACT_PATH}"
    data: dict[str, Any] = json.loads(CONTRACT_PATH.read_text())
    return data


# --- tests ------------------------------------------------------------------------------------------


def test_enums_match_the_reference(actual: dict[str, Any], reference: dict[str, Any]) -> None:
    problems = enum_differences(reference["enums"], actual["enums"])
    assert not problems, _report(problems)


def test_messages_match_the_reference_field_by_field(
    actual: dict[str, Any], reference: dict[str, Any]
) -> None:
    problems = message_differences(reference["messages"], actual["messages"])
    assert not problems, _report(problems)


def test_services_match_the_reference_rpc_by_rpc(actual: dict[str, Any], reference: dict[str, Any]) -> None:
    problems = service_differences(reference["services"], actual["services"])
    assert not problems, _report(problems)


def test_files_are_proto3_with_bare_names_and_the_go_package(
    orchestrator_files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    names = {file.name for file in orchestrator_files}
    assert names == set(EXPECTED_IMPORTS), f"files {sorted(names)}, expected {sorted(EXPECTED_IMPORTS)}"
    for file in orchestrator_files:
        assert file.syntax == "proto3", f"{file.name}: syntax {file.syntax!r}"
        assert file.options.go_package == GO_PACKAGE, f"{file.name}: go_package {file.options.go_package!r}"


def test_files_import_what_section_1_lists(
    orchestrator_files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    problems = [
        f"{file.name} imports {sorted(file.dependency)}, expected {sorted(EXPECTED_IMPORTS[file.name])}"
        for file in orchestrator_files
        if set(file.dependency) != EXPECTED_IMPORTS.get(file.name)
    ]
    assert not problems, "\n".join(problems)


def test_reserved_numbers_and_names(orchestrator_files: list[descriptor_pb2.FileDescriptorProto]) -> None:
    reserved: dict[str, tuple[set[int], set[str]]] = {}
    for file in orchestrator_files:
        for message in file.message_type:
            numbers = {number for span in message.reserved_range for number in range(span.start, span.end)}
            reserved[f"{PACKAGE}.{message.name}"] = (numbers, set(message.reserved_name))
        for enum in file.enum_type:
            # Enum reserved ranges are inclusive at both ends.
            numbers = {number for span in enum.reserved_range for number in range(span.start, span.end + 1)}
            reserved[f"{PACKAGE}.{enum.name}"] = (numbers, set(enum.reserved_name))
    problems = []
    for name, got in sorted(reserved.items()):
        want = EXPECTED_RESERVED.get(name, (set(), set()))
        if got != want:
            problems.append(f"{name}: reserves {got}, expected {want}")
    assert not problems, "\n".join(problems)


def test_only_register_model_is_deprecated(
    orchestrator_files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    deprecated = {
        f"{service.name}/{method.name}"
        for file in orchestrator_files
        for service in file.service
        for method in service.method
        if method.options.deprecated
    }
    assert deprecated == {"ModelService/RegisterModel"}


def test_converter_reports_differences() -> None:
    # The comparison itself must notice a wrong number, a missing value and a wrong streaming flag.
    field = {"label": "optional", "name": "x", "number": 1, "oneof": None, "type": "string", "type_name": ""}
    assert message_differences({"m": [field]}, {"m": [{**field, "number": 2}]}) == [
        "m.x: number is 2, expected 1"
    ]
    assert enum_differences({"e": {"A": 0, "B": 1}}, {"e": {"A": 0}}) == ["e: value B missing"]
    rpc = {"client_streaming": False, "input": "i", "output": "o", "server_streaming": True}
    assert service_differences({"s": {"R": rpc}}, {"s": {"R": {**rpc, "server_streaming": False}}}) == [
        "s/R: server_streaming is False, expected True"
    ]


def test_committed_stubs_are_up_to_date() -> None:
    differing = protos_build.check(PROTO_DIR, STUBS_DIR)
    assert not differing, f"stubs out of date with protos/ (run `make protos`): {differing}"


def test_stubs_register_bare_descriptor_names() -> None:
    assert computetask_pb2.DESCRIPTOR.name == "computetask.proto"
    assert event_pb2.Event.DESCRIPTOR.full_name == "orchestrator.Event"
    assert [field.name for field in performance_pb2.QueryPerformancesResponse.DESCRIPTOR.fields] == [
        "Performances",
        "next_page_token",
    ]


def test_relative_imports_rewrites_only_local_modules() -> None:
    source = "import grpc\nimport common_pb2 as common__pb2\nfrom google.protobuf import timestamp_pb2\n"
    assert protos_build.relative_imports(source, {"common_pb2"}) == (
        "import grpc\nfrom . import common_pb2 as common__pb2\nfrom google.protobuf import timestamp_pb2\n"
    )
