"""`/data_manager/`: data managers ("datasets"), their opener and description."""

from __future__ import annotations

import uuid

from backend_common import replica
from backend_common.db.local import StoredFile
from backend_common.db.replica import DataManager
from backend_common.orchestrator import OrchestratorError
from backend_common.protos import common_pb2, datamanager_pb2
from backend_common.storage import DATAMANAGER_BUCKET
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend_server import permissions, validation
from backend_server.authentication import Caller, authenticated, authenticated_read
from backend_server.data import data_managers, files
from backend_server.downloads import LocalFile, check_not_isolated, serve
from backend_server.errors import not_found
from backend_server.filestore import (
    StoredUpload,
    check_small_file,
    distinct_names,
    forget_files,
    put_upload,
    record_files,
    remove_objects,
    required_file,
)
from backend_server.http import base_url, one_or_404, page_of, paginated, params, path_key, raw_json_response
from backend_server.listing import DEFAULT_PAGE_SIZE
from backend_server.multipart import read_multipart, safe_filename
from backend_server.orchestration import creation_error, orchestrate, registered_url, rename_asset
from backend_server.render import dumps
from backend_server.state import blocking, in_transaction, server_state


def list_data_managers(session: Session, request: Request, caller: Caller) -> Response:
    page = page_of(request, DEFAULT_PAGE_SIZE)
    result = data_managers.list_data_managers(
        session, caller.channel, params(request), page, base_url(request)
    )
    return paginated(request, page, result)


def get_data_manager(session: Session, request: Request, caller: Caller) -> Response:
    return one_or_404(
        data_managers.get_document(session, caller.channel, path_key(request), base_url(request))
    )


async def _download(request: Request, caller: Caller, role: str) -> Response:
    check_not_isolated(request)
    key = path_key(request)
    settings = server_state(request).settings

    def load(session: Session) -> tuple[DataManager, StoredFile | None]:
        data_manager = data_managers.get_data_manager(session, caller.channel, key)
        if data_manager is None:
            raise not_found()
        permissions.check_process(data_manager, caller, settings)
        return data_manager, files.get_file(session, key, role)

    data_manager, stored = await in_transaction(request, load)
    if role == files.OPENER:
        address, checksum, name = data_manager.opener_address, data_manager.opener_checksum, "opener.py"
        media_type = "text/x-python; charset=utf-8"
    else:
        address, checksum, name = (
            data_manager.description_address,
            data_manager.description_checksum,
            "description.md",
        )
        media_type = "text/markdown; charset=utf-8"
    local = LocalFile(stored.bucket, stored.object_key, stored.filename or name) if stored else None
    return await serve(
        request,
        owner=data_manager.owner,
        local=local,
        address=address,
        channel=caller.channel,
        checksum=checksum,
        media_type=media_type,
    )


async def opener(request: Request, caller: Caller) -> Response:
    return await _download(request, caller, files.OPENER)


async def description(request: Request, caller: Caller) -> Response:
    return await _download(request, caller, files.DATA_MANAGER_DESCRIPTION)


async def create_data_manager(request: Request, caller: Caller) -> Response:
    state = server_state(request)
    form = await read_multipart(request)
    try:
        document = form.document
        name = validation.name(document.get("name"))
        metadata = validation.metadata(document.get("metadata"))
        permissions = validation.new_permissions(document.get("permissions"))
        # The orchestrator requires it; the reference defaults it to private to the owner.
        logs_permission = validation.new_permissions(document.get("logs_permission"), "logs_permission")
        opener = required_file(form, "data_opener")
        description = required_file(form, "description")
        check_small_file(state, opener)
        check_small_file(state, description)
        key = str(uuid.uuid4())
        opener_name, description_name = distinct_names(
            safe_filename(opener.filename, "opener.py"), safe_filename(description.filename, "description.md")
        )

        def store() -> list[StoredUpload]:
            stored = [
                put_upload(
                    state,
                    DATAMANAGER_BUCKET,
                    f"datamanagers/{key}/{opener_name}",
                    opener,
                    role=files.OPENER,
                    filename=opener_name,
                )
            ]
            try:
                stored.append(
                    put_upload(
                        state,
                        DATAMANAGER_BUCKET,
                        f"datamanagers/{key}/{description_name}",
                        description,
                        role=files.DATA_MANAGER_DESCRIPTION,
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
    stored_opener, stored_description = uploads
    new_data_manager = datamanager_pb2.NewDataManager(
        key=key,
        name=name,
        new_permissions=permissions,
        description=common_pb2.Addressable(
            checksum=stored_description.stored.sha256,
            storage_address=registered_url(state, f"/data_manager/{key}/description/"),
        ),
        opener=common_pb2.Addressable(
            checksum=stored_opener.stored.sha256,
            storage_address=registered_url(state, f"/data_manager/{key}/opener/"),
        ),
        logs_permission=logs_permission,
        metadata=metadata,
    )
    await record_files(request, [(key, upload) for upload in uploads])
    try:
        data_manager = await orchestrate(
            request, caller, lambda client: client.register_data_manager(new_data_manager)
        )
    except OrchestratorError as error:
        await forget_files(request, [key], uploads)
        raise creation_error(error, key) from None
    base = base_url(request)

    def store_locally(session: Session) -> str | None:
        replica.store_data_manager(session, caller.channel, data_manager)
        return data_managers.get_document(session, caller.channel, key, base)

    document_json = await in_transaction(request, store_locally)
    return raw_json_response(document_json or dumps({"key": key}), status=201)


def _data_manager_owner(session: Session, channel: str, key: str) -> str | None:
    data_manager = data_managers.get_data_manager(session, channel, key)
    return None if data_manager is None else data_manager.owner


def _rename_data_manager(session: Session, key: str, name: str) -> None:
    data_manager = session.get(DataManager, key)
    if data_manager is not None:
        data_manager.name = name


async def rename_data_manager(request: Request, caller: Caller) -> Response:
    return await rename_asset(
        request,
        caller,
        _data_manager_owner,
        lambda client, key, name: client.update_data_manager(key, name),
        _rename_data_manager,
    )


routes = [
    Route("/data_manager/", authenticated_read(list_data_managers), methods=["GET"]),
    Route("/data_manager/", authenticated(create_data_manager), methods=["POST"]),
    Route("/data_manager/{key}/", authenticated_read(get_data_manager), methods=["GET"]),
    Route("/data_manager/{key}/", authenticated(rename_data_manager), methods=["PUT"]),
    Route("/data_manager/{key}/opener/", authenticated(opener, basic=True), methods=["GET"]),
    Route("/data_manager/{key}/description/", authenticated(description, basic=True), methods=["GET"]),
]
