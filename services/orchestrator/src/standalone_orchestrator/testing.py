"""Test helpers: an in-process orchestrator and builders of valid assets, over the real client.

Used by this package's tests and benchmarks; nothing here runs in production.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from backend_common.orchestrator import OrchestratorClient
from backend_common.protos import (
    common_pb2,
    computeplan_pb2,
    computetask_pb2,
    datamanager_pb2,
    datasample_pb2,
    function_pb2,
)
from backend_common.settings import OrchestratorSettings

from standalone_orchestrator.api.server import OrchestratorServer
from standalone_orchestrator.config import Config
from standalone_orchestrator.migrations import upgrade

ORG1, ORG2, ORG3 = "MyOrg1MSP", "MyOrg2MSP", "MyOrg3MSP"
CHANNEL, OTHER_CHANNEL = "mychannel", "yourchannel"
CHANNELS = {CHANNEL: [ORG1, ORG2, ORG3], OTHER_CHANNEL: [ORG1, ORG2]}

MODEL = common_pb2.ASSET_MODEL
DATA_MANAGER = common_pb2.ASSET_DATA_MANAGER
DATA_SAMPLE = common_pb2.ASSET_DATA_SAMPLE
PERFORMANCE = common_pb2.ASSET_PERFORMANCE


def new_key() -> str:
    return str(uuid.uuid4())


def addressable() -> common_pb2.Addressable:
    return common_pb2.Addressable(
        checksum=uuid.uuid4().hex * 2, storage_address=f"http://storage/{uuid.uuid4()}"
    )


def permissions(public: bool = True, authorized: Sequence[str] = ()) -> common_pb2.NewPermissions:
    return common_pb2.NewPermissions(public=public, authorized_ids=list(authorized))


def parent_input(identifier: str, parent: str, output: str = "model") -> computetask_pb2.ComputeTaskInput:
    return computetask_pb2.ComputeTaskInput(
        identifier=identifier,
        parent_task_output=computetask_pb2.ParentTaskOutputRef(
            parent_task_key=parent, output_identifier=output
        ),
    )


def asset_input(identifier: str, key: str) -> computetask_pb2.ComputeTaskInput:
    return computetask_pb2.ComputeTaskInput(identifier=identifier, asset_key=key)


def output(
    public: bool = True, authorized: Sequence[str] = (), transient: bool = False
) -> computetask_pb2.NewComputeTaskOutput:
    return computetask_pb2.NewComputeTaskOutput(
        permissions=permissions(public, authorized), transient=transient
    )


def start_server(database_url: str, **overrides: Any) -> OrchestratorServer:
    upgrade(database_url)
    config = Config(listen="127.0.0.1:0", database_url=database_url, channels=CHANNELS, **overrides)
    server = OrchestratorServer(config)
    server.start()
    return server


@dataclass
class Network:
    """Clients of the organizations on both channels, and builders of valid assets."""

    server: OrchestratorServer
    clients: dict[tuple[str, str], OrchestratorClient] = field(default_factory=dict)

    def client(self, mspid: str = ORG1, channel: str = CHANNEL) -> OrchestratorClient:
        if (mspid, channel) not in self.clients:
            settings = OrchestratorSettings(host="127.0.0.1", port=self.server.port, max_attempts=1)
            self.clients[(mspid, channel)] = OrchestratorClient(settings, mspid, channel)
        return self.clients[(mspid, channel)]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def stub_metadata(self, mspid: str = ORG1, channel: str = CHANNEL) -> tuple[tuple[str, str], ...]:
        return (("mspid", mspid), ("channel", channel))

    def grpc_channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"127.0.0.1:{self.server.port}")

    # --- builders ----------------------------------------------------------------------------------

    def function(
        self,
        owner: str = ORG1,
        *,
        inputs: dict[str, function_pb2.FunctionInput] | None = None,
        outputs: dict[str, function_pb2.FunctionOutput] | None = None,
        public: bool = True,
        authorized: Sequence[str] = (),
        channel: str = CHANNEL,
        ready: bool = False,
    ) -> function_pb2.Function:
        new = function_pb2.NewFunction(
            key=new_key(),
            name="function",
            description=addressable(),
            archive=addressable(),
            new_permissions=permissions(public, authorized),
            inputs=inputs
            if inputs is not None
            else {"model": function_pb2.FunctionInput(kind=MODEL, optional=True)},
            outputs=outputs if outputs is not None else {"model": function_pb2.FunctionOutput(kind=MODEL)},
        )
        function = self.client(owner, channel).register_function(new)
        if ready:
            self.build(function.key, owner, channel)
            function = self.client(owner, channel).get_function(function.key)
        return function

    def build(self, function_key: str, owner: str = ORG1, channel: str = CHANNEL) -> None:
        client = self.client(owner, channel)
        client.apply_function_action(function_key, function_pb2.FUNCTION_ACTION_BUILDING)
        client.update_function(function_key, "function", addressable())
        client.apply_function_action(function_key, function_pb2.FUNCTION_ACTION_READY)

    def train_function(
        self, owner: str = ORG1, *, ready: bool = True, **kwargs: Any
    ) -> function_pb2.Function:
        return self.function(
            owner,
            inputs={
                "opener": function_pb2.FunctionInput(kind=DATA_MANAGER),
                "datasamples": function_pb2.FunctionInput(kind=DATA_SAMPLE, multiple=True),
                "model": function_pb2.FunctionInput(kind=MODEL, optional=True),
            },
            outputs={"model": function_pb2.FunctionOutput(kind=MODEL)},
            ready=ready,
            **kwargs,
        )

    def plan(self, owner: str = ORG1, channel: str = CHANNEL) -> computeplan_pb2.ComputePlan:
        return self.client(owner, channel).register_plan(
            computeplan_pb2.NewComputePlan(key=new_key(), name="plan", tag="tag", metadata={"a": "b"})
        )

    def data_manager(
        self,
        owner: str = ORG1,
        *,
        public: bool = True,
        authorized: Sequence[str] = (),
        channel: str = CHANNEL,
    ) -> datamanager_pb2.DataManager:
        return self.client(owner, channel).register_data_manager(
            datamanager_pb2.NewDataManager(
                key=new_key(),
                name="data manager",
                new_permissions=permissions(public, authorized),
                description=addressable(),
                opener=addressable(),
                logs_permission=permissions(False),
            )
        )

    def samples(
        self, manager_key: str, owner: str = ORG1, count: int = 2, channel: str = CHANNEL
    ) -> list[datasample_pb2.DataSample]:
        return self.client(owner, channel).register_data_samples(
            [
                datasample_pb2.NewDataSample(
                    key=new_key(), data_manager_keys=[manager_key], checksum="b" * 64
                )
                for _ in range(count)
            ]
        )

    def new_task(
        self,
        function: function_pb2.Function,
        plan: computeplan_pb2.ComputePlan,
        *,
        worker: str = "",
        inputs: Sequence[computetask_pb2.ComputeTaskInput] = (),
        outputs: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> computetask_pb2.NewComputeTask:
        return computetask_pb2.NewComputeTask(
            key=key or new_key(),
            function_key=function.key,
            compute_plan_key=plan.key,
            worker=worker,
            inputs=list(inputs),
            outputs=outputs if outputs is not None else {"model": output()},
            metadata={"__tag__": "tag"},
        )

    def task(
        self,
        function: function_pb2.Function,
        plan: computeplan_pb2.ComputePlan,
        owner: str = ORG1,
        channel: str = CHANNEL,
        **kwargs: Any,
    ) -> computetask_pb2.ComputeTask:
        kwargs.setdefault("worker", owner)
        return self.client(owner, channel).register_tasks([self.new_task(function, plan, **kwargs)])[0]

    def train_task(
        self, owner: str = ORG1, worker: str = ORG1, *, parents: Sequence[str] = (), function: Any = None
    ) -> tuple[computetask_pb2.ComputeTask, function_pb2.Function, computeplan_pb2.ComputePlan]:
        """A task whose worker owns the data, on a new plan."""
        function = function or self.train_function(owner)
        manager = self.data_manager(worker, public=True)
        samples = self.samples(manager.key, worker)
        plan = self.plan(owner)
        inputs = [asset_input("opener", manager.key), *(asset_input("datasamples", s.key) for s in samples)]
        inputs += [parent_input("model", parent) for parent in parents]
        task = self.task(function, plan, owner, inputs=inputs, worker="")
        return task, function, plan


def register_organizations(network: Network) -> None:
    for channel, organizations in CHANNELS.items():
        for organization in organizations:
            network.client(organization, channel).register_organization(f"http://{organization.lower()}.org")
