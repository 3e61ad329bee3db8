"""`/data_sample/`: data samples, their creation and their links to data managers."""

from __future__ import annotations

from datetime import UTC, datetime

from backend_common import replica
from backend_common.db.replica import DataManager, DataSampleDataManager
from backend_common.orchestrator import OrchestratorError
from backend_common.protos import datasample_pb2
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend_server import render, validation
from backend_server.authentication import Caller, authenticated, authenticated_read
from backend_server.data import data_samples, files
from backend_server.errors import bad_request, from_orchestrator
from backend_server.filestore import forget_files
from backend_server.http import (
    body_fields,
    json_body,
    json_response,
    one_or_404,
    page_of,
    paginated,
    params,
    path_key,
)
from backend_server.listing import DEFAULT_PAGE_SIZE
from backend_server.multipart import is_multipart, read_multipart
from backend_server.orchestration import creation_error, orchestrate
from backend_server.samples import (
    NewSample,
    check_own_data_managers,
    store_server_samples,
    store_uploaded_samples,
)
from backend_server.state import blocking, in_transaction, server_state


def list_data_samples(session: Session, request: Request, caller: Caller) -> Response:
    page = page_of(request, DEFAULT_PAGE_SIZE)
    return paginated(
        request, page, data_samples.list_data_samples(session, caller.channel, params(request), page)
    )


def get_data_sample(session: Session, request: Request, caller: Caller) -> Response:
    return one_or_404(data_samples.get_document(session, caller.channel, path_key(request)))


async def create_data_samples(request: Request, caller: Caller) -> Response:
    """Uploaded archives (multipart, one sample per file part) or directories on this server."""
    state = server_state(request)
    if is_multipart(request):
        form = await read_multipart(request)
        try:
            data_manager_keys = validation.key_list(
                form.document.get("data_manager_keys"), "data_manager_keys"
            )
            if not form.files:
                raise validation.file_error("No data sample archive was submitted.")
            await in_transaction(
                request,
                lambda session: check_own_data_managers(
                    session, caller.channel, data_manager_keys, state.settings.msp_id
                ),
            )
            samples = await blocking(lambda: store_uploaded_samples(state, form.files))
        finally:
            await form.close()
    else:
        document = await json_body(request)
        if not isinstance(document, dict):
            raise bad_request("Invalid data. Expected a dictionary.")
        data_manager_keys = validation.key_list(document.get("data_manager_keys"), "data_manager_keys")
        await in_transaction(
            request,
            lambda session: check_own_data_managers(
                session, caller.channel, data_manager_keys, state.settings.msp_id
            ),
        )
        samples = await blocking(lambda: store_server_samples(state, document))
    return await _register_samples(request, caller, samples, data_manager_keys)


async def _register_samples(
    request: Request, caller: Caller, samples: list[NewSample], data_manager_keys: list[str]
) -> Response:
    keys = [sample.key for sample in samples]
    uploads = [sample.upload for sample in samples if sample.upload is not None]
    now = datetime.now(UTC)

    def record(session: Session) -> None:
        for sample in samples:
            if sample.upload is not None:
                stored = sample.upload.stored
                files.add_file(
                    session,
                    asset_key=sample.key,
                    role=files.DATA_SAMPLE,
                    bucket=stored.bucket,
                    object_key=stored.key,
                    checksum=sample.checksum,
                    size=stored.size,
                    filename=sample.upload.filename,
                    now=now,
                )
            else:
                files.add_file(
                    session,
                    asset_key=sample.key,
                    role=files.DATA_SAMPLE,
                    bucket="servermedias",
                    object_key=sample.key,
                    checksum=sample.checksum,
                    size=0,
                    filename=None,
                    now=now,
                    path=sample.path,
                )

    await in_transaction(request, record)
    new_samples = [
        datasample_pb2.NewDataSample(
            key=sample.key, data_manager_keys=data_manager_keys, checksum=sample.checksum
        )
        for sample in samples
    ]
    try:
        registered = await orchestrate(
            request, caller, lambda client: client.register_data_samples(new_samples)
        )
    except OrchestratorError as error:
        await forget_files(request, keys, uploads)
        raise creation_error(error, keys, as_list=True) from None

    def store_locally(session: Session) -> None:
        for data_sample in registered:
            replica.store_data_sample(session, caller.channel, data_sample)

    await in_transaction(request, store_locally)
    by_key = {data_sample.key: data_sample for data_sample in registered}
    body = []
    for sample in samples:
        data_sample = by_key.get(sample.key)
        body.append(
            {
                "key": sample.key,
                "checksum": sample.checksum,
                "path": None,
                "creation_date": render.iso(data_sample.creation_date.ToDatetime(UTC))
                if data_sample
                else None,
                "data_manager_keys": list(data_sample.data_manager_keys)
                if data_sample
                else data_manager_keys,
                "owner": data_sample.owner if data_sample else server_state(request).settings.msp_id,
            }
        )
    return json_response(body, status=201)


async def link_data_samples(request: Request, caller: Caller) -> Response:
    """Append data managers to samples (form-encoded with repeated fields, or JSON)."""
    fields = await body_fields(request)
    data_manager_keys = validation.key_list(fields.get("data_manager_keys"), "data_manager_keys")
    sample_keys = validation.key_list(fields.get("data_sample_keys"), "data_sample_keys")
    if not data_manager_keys or not sample_keys:
        raise bad_request("data_manager_keys and data_sample_keys are required")
    try:
        await orchestrate(
            request, caller, lambda client: client.update_data_samples(sample_keys, data_manager_keys)
        )
    except OrchestratorError as error:
        raise from_orchestrator(error) from None

    def link(session: Session) -> None:
        known = set(session.scalars(select(DataManager.key).where(DataManager.key.in_(data_manager_keys))))
        present = {row.key for row in data_samples.get_samples(session, caller.channel, sample_keys)}
        rows = [
            {"data_sample_key": sample_key, "data_manager_key": data_manager_key}
            for sample_key in sample_keys
            if sample_key in present
            for data_manager_key in data_manager_keys
            if data_manager_key in known
        ]
        if rows:
            session.execute(insert(DataSampleDataManager).on_conflict_do_nothing(), rows)

    await in_transaction(request, link)
    return json_response({"data_sample_keys": sample_keys, "data_manager_keys": data_manager_keys})


routes = [
    Route("/data_sample/", authenticated_read(list_data_samples), methods=["GET"]),
    Route("/data_sample/", authenticated(create_data_samples), methods=["POST"]),
    Route("/data_sample/bulk_update/", authenticated(link_data_samples), methods=["POST"]),
    Route("/data_sample/{key}/", authenticated_read(get_data_sample), methods=["GET"]),
]
