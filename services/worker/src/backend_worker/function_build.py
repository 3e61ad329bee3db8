"""Function builds (compute-engine.md 5): the owner's builder, and local builds on any worker.

The builder of the function's owner reports the build to the orchestrator: BUILDING, then READY
(its waiting tasks move on), or a BUILD failure report carrying the build output (the function and
its building tasks fail). A function whose compute plans are all canceled or failed is canceled
instead of built. Environments are keyed by archive checksum: a checksum built on this host is
never built again, whichever function brings it.

Before READY the builder publishes the function's image (`UpdateFunction(name, image)`, as the
reference does): environments stay on the host that built them, so the image is a manifest of the
build (archive checksum, entrypoint, installed packages), stored as `functions/<key>/image.zip` and
served at `<DEFAULT_DOMAIN>/function/<key>/image/`.

Workers build locally what they have not built yet, including functions of other organizations,
whose archive is downloaded from the owner's backend.
"""

from __future__ import annotations

import enum
import io
import json
import tempfile
import time
import zipfile
from pathlib import Path

from backend_common.logging import get_logger
from backend_common.orchestrator import OrchestratorClient, UnknownError
from backend_common.protos import common_pb2, computetask_pb2, failure_report_pb2, function_pb2
from backend_common.storage import FUNCTION_BUCKET

from backend_worker.asset_sources import ROLE_FUNCTION_ARCHIVE, ROLE_FUNCTION_IMAGE
from backend_worker.context import WorkerContext
from backend_worker.errors import BuildError
from backend_worker.executor import FunctionImage
from backend_worker.failure_reports import register_failure_report
from backend_worker.metrics import FUNCTION_BUILD_DURATION, FUNCTION_BUILDS
from backend_worker.profiling import register_build_step
from backend_worker.stored_files import record_function_build, store_file

logger = get_logger("backend_worker.function_build")


class BuildOutcome(enum.StrEnum):
    BUILT = "built"
    REUSED = "reused"
    FAILED = "failed"
    CANCELED = "canceled"
    DROPPED = "dropped"


def ensure_function_image(
    context: WorkerContext, client: OrchestratorClient, function: function_pb2.Function
) -> tuple[FunctionImage, bool]:
    """The function's environment on this host, built now if needed; whether it was built now."""
    checksum = function.archive.checksum
    image = context.executor.find_image(checksum)
    if image is not None:
        return image, False
    scratch_parent = context.root / "tmp"
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_parent, prefix="function-") as scratch:
        archive = Path(scratch) / "archive"
        context.sources.fetch_file(
            asset_key=function.key,
            role=ROLE_FUNCTION_ARCHIVE,
            owner=function.owner,
            address=function.archive.storage_address,
            channel=client.channel,
            checksum=checksum,
            destination=archive,
        )
        record_function_build(context.sessions, checksum, status="building")
        try:
            image = context.executor.build_image(checksum, archive)
        except BuildError as error:
            record_function_build(context.sessions, checksum, status="failed", error=error.logs[-10000:])
            raise
    record_function_build(
        context.sessions,
        checksum,
        status="ready",
        location=image.location,
        entrypoint=list(image.entrypoint.entrypoint),
    )
    return image, True


def plans_all_terminated(client: OrchestratorClient, function_key: str) -> bool:
    """Whether the function is used, and only by canceled or failed compute plans."""
    plan_keys = {
        task.compute_plan_key
        for task in client.iter_tasks(computetask_pb2.TaskQueryFilter(function_key=function_key))
    }
    if not plan_keys:
        # Functions are registered before the plans that use them: not a reason to skip the build.
        return False
    for plan_key in plan_keys:
        plan = client.get_plan(plan_key)
        if not (plan.HasField("cancelation_date") or plan.HasField("failure_date")):
            return False
    return True


def _apply(client: OrchestratorClient, key: str, action: function_pb2.FunctionAction.ValueType) -> None:
    try:
        client.apply_function_action(key, action)
    except UnknownError as error:
        # A state-machine refusal: another attempt already moved the function on.
        logger.info("function action refused", function_key=key, action=action, error=str(error))


def build_function(context: WorkerContext, channel: str, function_key: str) -> BuildOutcome:
    """The builder's work for one function registered by this organization."""
    started = time.monotonic()
    outcome = _build_function(context, channel, function_key)
    FUNCTION_BUILDS.labels(outcome=outcome.value).inc()
    FUNCTION_BUILD_DURATION.labels(outcome=outcome.value).observe(time.monotonic() - started)
    return outcome


def _build_function(context: WorkerContext, channel: str, function_key: str) -> BuildOutcome:
    client = context.orchestrator(channel)
    function = client.get_function(function_key)
    log = logger.bind(function_key=function_key, channel=channel)
    if function.owner != context.organization_id:
        log.info("not building a function of another organization", owner=function.owner)
        return BuildOutcome.DROPPED
    if function.status == function_pb2.FUNCTION_STATUS_WAITING:
        _apply(client, function_key, function_pb2.FUNCTION_ACTION_BUILDING)
    elif function.status != function_pb2.FUNCTION_STATUS_BUILDING:
        log.info("function not waiting for a build", status=function_pb2.FunctionStatus.Name(function.status))
        return BuildOutcome.DROPPED
    if plans_all_terminated(client, function_key):
        log.info("every compute plan using the function is over: build canceled")
        _apply(client, function_key, function_pb2.FUNCTION_ACTION_CANCELED)
        return BuildOutcome.CANCELED
    started = time.monotonic()
    try:
        image, built = ensure_function_image(context, client, function)
    except BuildError as error:
        log.info("function build failed", error=str(error))
        register_failure_report(
            context,
            client,
            asset_key=function_key,
            asset_type=failure_report_pb2.FAILED_ASSET_FUNCTION,
            error_type=failure_report_pb2.ERROR_TYPE_BUILD,
            logs=error.logs,
        )
        return BuildOutcome.FAILED
    register_build_step(client, function_key, time.monotonic() - started)
    publish_image(context, client, function_key, image)
    _apply(client, function_key, function_pb2.FUNCTION_ACTION_READY)
    log.info("function ready", built=built)
    return BuildOutcome.BUILT if built else BuildOutcome.REUSED


def image_manifest(function: function_pb2.Function, image: FunctionImage, packages: list[str]) -> bytes:
    """The zip published as the function's image; the same build gives the same bytes."""
    manifest = {
        "function_key": function.key,
        "archive_checksum": image.archive_checksum,
        "entrypoint": list(image.entrypoint.entrypoint),
        "packages": packages,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("image.json", date_time=(1980, 1, 1, 0, 0, 0))
        archive.writestr(info, json.dumps(manifest, indent=2, sort_keys=True))
    return buffer.getvalue()


def publish_image(
    context: WorkerContext, client: OrchestratorClient, function_key: str, image: FunctionImage
) -> common_pb2.Addressable:
    """Store the image manifest and set it on the function (the orchestrator wants a READY
    function to have an image)."""
    function = client.get_function(function_key)  # fresh: keep a rename made during the build
    object_key = f"functions/{function_key}/image.zip"
    stored = store_file(
        context.storage,
        context.sessions,
        asset_key=function_key,
        role=ROLE_FUNCTION_IMAGE,
        bucket=FUNCTION_BUCKET,
        object_key=object_key,
        content=[image_manifest(function, image, context.executor.image_packages(image))],
        filename="image.zip",
    )
    address = common_pb2.Addressable(
        checksum=stored.sha256, storage_address=f"{context.default_domain}/function/{function_key}/image/"
    )
    client.update_function(function_key, name=function.name, image=address)
    return address
