"""Streamed multipart bodies: file parts are spooled to temporary files, never held whole in memory.

The form's non-file payload is one field named `json` holding a JSON document (`rest-api.md` 6);
file parts are kept in their order, since data-sample responses follow it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import IO, Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from backend_server.errors import ApiError
from backend_server.state import server_state

# Room for boundaries, part headers, the `json` field and small files next to the largest upload.
BODY_OVERHEAD = 64 * 1024 * 1024
MAX_FIELD_SIZE = 16 * 1024 * 1024
MAX_PARTS = 10_000
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request body exceeds the maximum upload size of {limit} bytes")


@dataclass
class Upload:
    field: str
    filename: str
    file: IO[bytes]
    size: int


@dataclass
class MultipartForm:
    document: dict[str, Any]
    files: list[Upload] = field(default_factory=list)
    _uploads: list[UploadFile] = field(default_factory=list)

    def file(self, name: str) -> Upload | None:
        return next((upload for upload in self.files if upload.field == name), None)

    async def close(self) -> None:
        for upload in self._uploads:
            await upload.close()


def safe_filename(name: str | None, default: str) -> str:
    """A storage-safe base name: no directories, no odd characters."""
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    cleaned = _SAFE_FILENAME.sub("_", base).strip("._")
    return cleaned[:200] or default


class _BodyTooLargeError(MultiPartException):
    """Raised inside the parser's stream so that it closes the files spooled so far."""


async def _limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLargeError("too large")
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _BodyTooLargeError("too large")
        yield chunk


async def read_multipart(request: Request) -> MultipartForm:
    """Parse a multipart create: the `json` document and the file parts (each at most the upload limit)."""
    settings = server_state(request).settings
    max_file_size = settings.storage.data_upload_max_size
    parser = MultiPartParser(
        request.headers,
        _limited(request, max_file_size + BODY_OVERHEAD),
        max_files=MAX_PARTS,
        max_fields=MAX_PARTS,
        max_part_size=MAX_FIELD_SIZE,
    )
    try:
        form = await parser.parse()
    except _BodyTooLargeError:
        raise too_large(max_file_size) from None
    except MultiPartException as error:
        raise ApiError(400, f"Invalid multipart body: {error.message}") from None
    result = MultipartForm(document={})
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                result._uploads.append(value)
                value.file.seek(0, os.SEEK_END)
                size = value.file.tell()
                value.file.seek(0)
                if size > max_file_size:
                    raise too_large(max_file_size)
                result.files.append(
                    Upload(field=name, filename=value.filename or name, file=value.file, size=size)
                )
            elif name == "json":
                try:
                    document = json.loads(value)
                except ValueError:
                    raise ApiError(400, "the `json` field is not valid JSON") from None
                if not isinstance(document, dict):
                    raise ApiError(400, "the `json` field must hold a JSON object")
                result.document.update(document)
            else:
                result.document.setdefault(name, value)
    except BaseException:
        await result.close()
        raise
    return result


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")
