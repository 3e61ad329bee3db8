"""`/function/`: functions, their archive, description, image and build profiling."""

from __future__ import annotations

import uuid

from backend_common import replica
from backend_common.db.local import StoredFile
from backend_common.db.replica import Function
from backend_common.orchestrator import OrchestratorError
from backend_common.protos import common_pb2, function_pb2
from backend_common.storage import FUNCTION_BUCKET
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend_server import archives, permissions, validation
from backend_server.authentication import Caller, authenticated, authenticated_read
from backend_server.data import files, functions
from backend_server.downloads import LocalFile, check_not_isolated, serve
from backend_server.errors import ApiError, not_found
from backend_server.filestore import (
    StoredUpload,
    archive_limits,
    check_small_file,
    distinct_names,
    forget_files,
    put_upload,
    record_files,
    remove_objects,
    required_file,
)
from backend_server.http import (
    base_url,
    json_response,
    one_or_404,
    page_of,
    paginated,
    params,
    path_key,
    raw_json_response,
)
from backend_server.listing import DEFAULT_PAGE_SIZE
from backend_server.multipart import read_multipart, safe_filename
from backend_server.orchestration import creation_error, orchestrate, registered_url, rename_asset
from backend_server.render import dumps
from backend_server.state import blocking, in_transaction, server_state


def list_functions(session: Session, request: Request, caller: Caller) -> Response:
    page = page_of(request, DEFAULT_PAGE_SIZE)
    result = functions.list_functions(session, caller.channel, params(request), page, base_url(request))
    return paginated(request, page, result)


def get_function(session: Session, request: Request, caller: Caller) -> Response:
    return one_or_404(functions.get_document(session, caller.channel, path_key(request), base_url(request)))


def profiling(session: Session, request: Request, caller: Caller) -> Response:
    key = path_key(request)
    if functions.get_function(session, caller.channel, key) is None:
        raise not_found()
    return json_response(functions.profiling(session, key))


async def _download(request: Request, caller: Caller, role: str, media_type: str) -> Response:
    check_not_isolated(request)
    key = path_key(request)
    settings = server_state(request).settings

    def load(session: Session) -> tuple[Function, StoredFile | None]:
        function = functions.get_function(session, caller.channel, key)
        if function is None:
            raise not_found()
        permissions.check_process(function, caller, settings)
        return function, files.get_file(session, key, role)

    function, stored = await in_transaction(request, load)
    checksum: str | None
    if role == files.FUNCTION_ARCHIVE:
        address, checksum, default_name = function.archive_address, function.archive_checksum, "archive"
    elif role == files.FUNCTION_DESCRIPTION:
        address, checksum, default_name = (
            function.description_address,
            function.description_checksum,
            "description.md",
        )
    else:
        address, checksum, default_name = function.image_address or "", function.image_checksum, "image.zip"
    local = None
    if stored is not None:
        local = LocalFile(stored.bucket, stored.object_key, stored.filename or default_name)
    elif role == files.FUNCTION_IMAGE:
        # Where the worker's save-image step puts it (compute-engine.md 4.1).
        local = LocalFile(FUNCTION_BUCKET, f"functions/{key}/image.zip", default_name)
    return await serve(
        request,
        owner=function.owner,
        local=local,
        address=address,
        channel=caller.channel,
        checksum=checksum,
        media_type=media_type,
    )


async def archive(request: Request, caller: Caller) -> Response:
    return await _download(request, caller, files.FUNCTION_ARCHIVE, "application/octet-stream")


async def description(request: Request, caller: Caller) -> Response:
    return await _download(request, caller, files.FUNCTION_DESCRIPTION, "text/markdown; charset=utf-8")


async def image(request: Request, caller: Caller) -> Response:
    return await _download(request, caller, files.FUNCTION_IMAGE, "application/zip")


async def create_function(request: Request, caller: Caller) -> Response:
    state = server_state(request)
    if not state.settings.compute.builder_enabled:
        raise ApiError(422, "No builder available on this organization")
    form = await read_multipart(request)
    try:
        document = form.document
        name = validation.name(document.get("name"))
        metadata = validation.metadata(document.get("metadata"))
        permissions = validation.new_permissions(document.get("permissions"))
        inputs = validation.function_inputs(document.get("inputs"))
        outputs = validation.function_outputs(document.get("outputs"))
        archive = required_file(form, "file")
        description = required_file(form, "description")
        check_small_file(state, description)
        limits = archive_limits(state)

        def check_archive() -> None:
            try:
                archives.check_function_archive(archives.inspect_archive(archive.file, limits))
            except archives.ArchiveError as error:
                raise validation.file_error(f"file: {error}") from None

        await blocking(check_archive)
        key = str(uuid.uuid4())
        archive_name, description_name = distinct_names(
            safe_filename(archive.filename, "archive"), safe_filename(description.filename, "description.md")
        )

        def store() -> list[StoredUpload]:
            stored = [
                put_upload(
                    state,
                    FUNCTION_BUCKET,
                    f"functions/{key}/{archive_name}",
                    archive,
                    role=files.FUNCTION_ARCHIVE,
                    filename=archive_name,
                )
            ]
            try:
                stored.append(
                    put_upload(
                        state,
                        FUNCTION_BUCKET,
                        f"functions/{key}/{description_name}",
                        description,
                        role=files.FUNCTION_DESCRIPTION,
                        filename=description_name,
                    )
                )
            except BaseException:
                remove_objects(state, stored)
                raise
            return stored

        uploads = await blocking(store)
    finally:
        await form.close()
    stored_archive, stored_description = uploads
    new_function = function_pb2.NewFunction(
        key=key,
        name=name,
        description=common_pb2.Addressable(
            checksum=stored_description.stored.sha256,
            storage_address=registered_url(state, f"/function/{key}/description/"),
        ),
        archive=common_pb2.Addressable(
            checksum=stored_archive.stored.sha256,
            storage_address=registered_url(state, f"/function/{key}/file/"),
        ),
        new_permissions=permissions,
        metadata=metadata,
        inputs=inputs,
        outputs=outputs,
    )
    await record_files(request, [(key, upload) for upload in uploads])
    try:
        function = await orchestrate(request, caller, lambda client: client.register_function(new_function))
    except OrchestratorError as error:
        await forget_files(request, [key], uploads)
        raise creation_error(error, key) from None
    base = base_url(request)

    def store_locally(session: Session) -> str | None:
        replica.store_function(session, caller.channel, function)
        return functions.get_document(session, caller.channel, key, base)

    document_json = await in_transaction(request, store_locally)
    return raw_json_response(document_json or dumps({"key": key}), status=201)


def _function_owner(session: Session, channel: str, key: str) -> str | None:
    function = functions.get_function(session, channel, key)
    return None if function is None else function.owner


def _rename_function(session: Session, key: str, name: str) -> None:
    function = session.get(Function, key)
    if function is not None:
        function.name = name


async def rename_function(request: Request, caller: Caller) -> Response:
    return await rename_asset(
        request,
        caller,
        _function_owner,
        lambda client, key, name: client.update_function(key, name),
        _rename_function,
    )


routes = [
    Route("/function/", authenticated_read(list_functions), methods=["GET"]),
    Route("/function/", authenticated(create_function), methods=["POST"]),
    Route("/function/{key}/", authenticated_read(get_function), methods=["GET"]),
    Route("/function/{key}/", authenticated(rename_function), methods=["PUT"]),
    Route("/function/{key}/file/", authenticated(archive, basic=True), methods=["GET"]),
    Route("/function/{key}/description/", authenticated(description, basic=True), methods=["GET"]),
    Route("/function/{key}/image/", authenticated(image, basic=True), methods=["GET"]),
    Route("/function/{key}/profiling/", authenticated_read(profiling), methods=["GET"]),
]
