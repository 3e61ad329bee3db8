"""A small client of the registry HTTP API v2 (distribution spec) over httpx.

Shared by registry-prepopulate (copies base images in) and the scheduler (deletes the images of
functions no longer used).

Blobs are streamed in both directions (never a whole layer in memory) and checked against their
digest. Authentication: Basic (sent up front, as htpasswd registries expect) and the Bearer token
handshake public registries use (Docker Hub, ghcr.io), tokens being cached per repository.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import IO, Any

import httpx

from backend_common.registry.errors import ImageError
from backend_common.registry.oci import (
    MANIFEST_ACCEPT,
    MANIFEST_MEDIA_TYPES,
    Descriptor,
    DigestError,
    Manifest,
    hasher_for,
    is_digest,
)
from backend_common.registry.reference import api_host

DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
READ_SIZE = 1024 * 1024
TOKEN_TIMEOUT_SECONDS = 30.0

_REPOSITORY_PATH_RE = re.compile(r"^/v2/(?P<name>.+?)/(?:manifests|blobs|tags)/")
_CHALLENGE_RE = re.compile(r"^\s*(?P<scheme>\w+)\s*(?P<params>.*)$")
_CHALLENGE_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')
_NEXT_LINK_RE = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class RegistryError(ImageError):
    def __init__(self, message: str, *, status: int | None = None, codes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.codes = codes


class RegistryUnavailableError(RegistryError):
    """No HTTP answer at all (connection refused, DNS, timeout): worth retrying while starting."""


class RegistryAuthError(RegistryError):
    pass


class NotFoundError(RegistryError):
    pass


class _RegistryAuth(httpx.Auth):
    """Basic credentials up front; on a Bearer challenge, fetch a token and replay the request.

    A replay cannot resend a streamed body, so uploads start with a body-less POST that triggers the
    handshake first (the token is then cached for the repository).
    """

    def __init__(self, username: str | None, password: str | None) -> None:
        self._basic: str | None = None
        if username is not None:
            raw = f"{username}:{password or ''}".encode()
            self._basic = "Basic " + base64.b64encode(raw).decode("ascii")
        self._tokens: dict[str, str] = {}
        self._uses_tokens = False

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key = _repository_of(request.url.path)
        token = self._tokens.get(key)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        elif self._basic and not self._uses_tokens:
            request.headers["Authorization"] = self._basic
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme != "bearer" or "realm" not in params:
            return  # Basic: the credentials, if any, were sent; the 401 is the answer
        self._uses_tokens = True
        token_request = httpx.Request(
            "GET",
            params["realm"],
            params={name: params[name] for name in ("service", "scope") if name in params},
            headers={"Authorization": self._basic} if self._basic else {},
            extensions={"timeout": httpx.Timeout(TOKEN_TIMEOUT_SECONDS).as_dict()},
        )
        token_response = yield token_request
        token_response.read()
        if token_response.status_code != 200:
            raise RegistryAuthError(
                f"token request to {params['realm']} for {params.get('scope', 'the registry')} "
                f"failed with HTTP {token_response.status_code}: {token_response.text[:200]}",
                status=token_response.status_code,
            )
        body = token_response.json()
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"token response of {params['realm']} has no token")
        self._tokens[key] = token
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _repository_of(path: str) -> str:
    match = _REPOSITORY_PATH_RE.match(path)
    return match.group("name") if match else ""


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    match = _CHALLENGE_RE.match(header)
    if not match:
        return "", {}
    return match.group("scheme").lower(), dict(_CHALLENGE_PARAM_RE.findall(match.group("params")))


class RegistryClient:
    """One registry. `host` is `host[:port]` as in image names (`docker.io` maps to its API host)."""

    def __init__(
        self,
        host: str,
        *,
        scheme: str = "http",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 60.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        user_agent: str = "substra-backend",
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"registry scheme must be http or https, got {scheme!r}")
        self.host = host
        self.base_url = f"{scheme}://{api_host(host)}"
        # <= 0: every blob in one PUT; otherwise blobs larger than this go in PATCH chunks.
        self.chunk_size = chunk_size
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=_RegistryAuth(username, password),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            # Blob downloads are often redirected to object storage or a CDN.
            follow_redirects=True,
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r})"

    # -- API ---------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Raises RegistryUnavailableError without an answer, RegistryAuthError on refused credentials."""
        self._send("GET", "/v2/", expected=(200,), what=f"ping {self.base_url}/v2/")

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """The descriptor `repository:reference` points at, or None when there is none."""
        what = f"HEAD manifest {self.host}/{repository}:{reference}"
        response = self._send(
            "HEAD",
            _manifest_path(repository, reference),
            headers={"Accept": MANIFEST_ACCEPT},
            expected=(200, 404),
            what=what,
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest", "")
        if not is_digest(digest):
            # The header is optional in the spec: the body settles it.
            manifest = self.get_manifest(repository, reference)
            return Descriptor(manifest.media_type, manifest.digest, len(manifest.content))
        size = int(response.headers.get("Content-Length", "0") or 0)
        return Descriptor(_content_type(response), digest, size)

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        what = f"GET manifest {self.host}/{repository}:{reference}"
        response = self._send(
            "GET",
            _manifest_path(repository, reference),
            headers={"Accept": MANIFEST_ACCEPT},
            expected=(200,),
            what=what,
        )
        content_type = _content_type(response)
        manifest = Manifest.parse(
            response.content,
            content_type if content_type in MANIFEST_MEDIA_TYPES else None,
            reference if is_digest(reference) else None,
        )
        header = response.headers.get("Docker-Content-Digest", "")
        same_algorithm = header.split(":")[0] == manifest.digest.split(":")[0]
        if is_digest(header) and same_algorithm and header != manifest.digest:
            raise DigestError(f"{what}: the registry says {header}, the content hashes to {manifest.digest}")
        return manifest

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """Pushes the exact bytes (so the digest is kept); returns the digest the registry reports."""
        what = f"PUT manifest {self.host}/{repository}:{reference}"
        response = self._send(
            "PUT",
            _manifest_path(repository, reference),
            content=manifest.content,
            headers={"Content-Type": manifest.media_type},
            expected=(200, 201),
            what=what,
        )
        digest = str(response.headers.get("Docker-Content-Digest", manifest.digest))
        if digest != manifest.digest:
            raise DigestError(f"{what}: the registry stored {digest}, expected {manifest.digest}")
        return digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        what = f"DELETE manifest {self.host}/{repository}@{digest}"
        self._send("DELETE", _manifest_path(repository, digest), expected=(202,), what=what)

    def tags(self, repository: str) -> list[str]:
        url: str | httpx.URL | None = f"/v2/{repository}/tags/list"
        found: list[str] = []
        while url is not None:
            response = self._send("GET", url, expected=(200,), what=f"list tags of {self.host}/{repository}")
            found.extend(response.json().get("tags") or [])
            url = _next_link(response)
        return found

    def blob_exists(self, repository: str, digest: str) -> bool:
        what = f"HEAD blob {self.host}/{repository}@{digest}"
        response = self._send("HEAD", _blob_path(repository, digest), expected=(200, 404), what=what)
        return response.status_code == 200

    def download_blob(self, repository: str, digest: str, out: IO[bytes], size: int | None = None) -> int:
        """Streams the blob into `out`, checking its digest (and size when given); returns the size."""
        what = f"GET blob {self.host}/{repository}@{digest}"
        hasher = hasher_for(digest)
        written = 0
        try:
            with self._http.stream("GET", _blob_path(repository, digest)) as response:
                if response.status_code != 200:
                    response.read()
                    raise _error(what, response)
                for chunk in response.iter_bytes(READ_SIZE):
                    out.write(chunk)
                    hasher.update(chunk)
                    written += len(chunk)
        except httpx.TransportError as exc:
            raise RegistryUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc
        actual = f"{hasher.name}:{hasher.hexdigest()}"
        if actual != digest:
            raise DigestError(f"{what}: downloaded {written} bytes hashing to {actual}")
        if size is not None and written != size:
            raise DigestError(f"{what}: downloaded {written} bytes, the manifest says {size}")
        return written

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> str | None:
        """Cross-repository mount: None when mounted, else the upload session the registry opened."""
        what = f"mount blob {digest} from {from_repository} into {self.host}/{repository}"
        response = self._send(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            params={"mount": digest, "from": from_repository},
            headers={"Content-Length": "0"},
            expected=(201, 202),
            what=what,
        )
        return None if response.status_code == 201 else str(_location(response, what))

    def upload_blob(
        self, repository: str, digest: str, stream: IO[bytes], size: int, *, location: str | None = None
    ) -> None:
        """POST, then one PUT (small blobs) or PATCH chunks and a closing PUT; `location` reuses a session."""
        what = f"upload blob {digest} ({size} bytes) to {self.host}/{repository}"
        url = httpx.URL(location) if location else self._start_upload(repository, what)
        try:
            if self.chunk_size <= 0 or size <= self.chunk_size:
                self._put_whole(url, digest, stream, size, what)
            else:
                self._put_chunks(url, digest, stream, size, what)
        except BaseException:
            self._cancel_upload(url)
            raise

    # -- internals ---------------------------------------------------------------------------------

    def _start_upload(self, repository: str, what: str) -> httpx.URL:
        response = self._send(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            headers={"Content-Length": "0"},
            expected=(202,),
            what=what,
        )
        return _location(response, what)

    def _put_whole(self, url: httpx.URL, digest: str, stream: IO[bytes], size: int, what: str) -> None:
        hasher = hasher_for(digest)
        try:
            self._send(
                "PUT",
                url.copy_merge_params({"digest": digest}),
                content=_read_exactly(stream, size, hasher, digest),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                expected=(201,),
                what=what,
            )
        except RegistryError:
            actual = f"{hasher.name}:{hasher.hexdigest()}"
            if actual != digest:  # say it is the source's fault, not the registry's
                raise DigestError(f"{what}: the source content hashes to {actual}") from None
            raise

    def _put_chunks(self, url: httpx.URL, digest: str, stream: IO[bytes], size: int, what: str) -> None:
        hasher = hasher_for(digest)
        offset = 0
        while offset < size:
            length = min(self.chunk_size, size - offset)
            response = self._send(
                "PATCH",
                url,
                content=_read_exactly(stream, length, hasher, digest),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(length),
                    "Content-Range": f"{offset}-{offset + length - 1}",
                },
                expected=(202,),
                what=f"{what}, chunk at {offset}",
            )
            url = _location(response, what)  # each answer names where the next chunk goes
            offset += length
        actual = f"{hasher.name}:{hasher.hexdigest()}"
        if actual != digest:
            raise DigestError(f"{what}: the source content hashes to {actual}")
        self._send(
            "PUT",
            url.copy_merge_params({"digest": digest}),
            headers={"Content-Length": "0"},
            expected=(201,),
            what=f"{what}, completion",
        )

    def _cancel_upload(self, url: httpx.URL) -> None:
        # Best effort: the registry purges abandoned sessions anyway.
        with contextlib.suppress(httpx.HTTPError):
            self._http.delete(url)

    def _send(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        expected: tuple[int, ...],
        what: str,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        content: bytes | Iterator[bytes] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(method, url, headers=headers, params=params, content=content)
        except httpx.TransportError as exc:
            raise RegistryUnavailableError(
                f"{what}: no answer from {self.base_url} ({type(exc).__name__}: {exc})"
            ) from exc
        if response.status_code not in expected:
            raise _error(what, response)
        return response


def _manifest_path(repository: str, reference: str) -> str:
    return f"/v2/{repository}/manifests/{reference}"


def _blob_path(repository: str, digest: str) -> str:
    return f"/v2/{repository}/blobs/{digest}"


def _content_type(response: httpx.Response) -> str:
    return str(response.headers.get("Content-Type", "")).split(";")[0].strip()


def _location(response: httpx.Response, what: str) -> httpx.URL:
    location = response.headers.get("Location")
    if not location:
        raise RegistryError(f"{what}: HTTP {response.status_code} without a Location header")
    # Relative locations are relative to the request, and keep their query (`_state=...`).
    return response.request.url.join(location)


def _next_link(response: httpx.Response) -> httpx.URL | None:
    match = _NEXT_LINK_RE.search(response.headers.get("Link", ""))
    return response.request.url.join(match.group(1)) if match else None


def _read_exactly(stream: IO[bytes], length: int, hasher: Any, digest: str) -> Iterator[bytes]:
    remaining = length
    while remaining:
        chunk = stream.read(min(READ_SIZE, remaining))
        if not chunk:
            raise ImageError(f"blob {digest}: the source ended {remaining} bytes before its size")
        hasher.update(chunk)
        remaining -= len(chunk)
        yield chunk


def _error(what: str, response: httpx.Response) -> RegistryError:
    """A message naming the operation, the HTTP status and the registry's error codes."""
    codes: list[str] = []
    details: list[str] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for error in body.get("errors") or []:
            if isinstance(error, dict):
                codes.append(str(error.get("code", "")))
                details.append(f"{error.get('code', '')}: {error.get('message', '')}")
    elif response.text.strip():
        details.append(response.text.strip()[:200])
    status = response.status_code
    message = f"{what}: HTTP {status}" + (f" ({'; '.join(details)})" if details else "")
    if status == 401:
        return RegistryAuthError(
            f"{message}: authentication required or refused, check the credentials", status=status
        )
    if status == 404:
        return NotFoundError(f"{message}: not found", status=status, codes=tuple(codes))
    return RegistryError(message, status=status, codes=tuple(codes))
