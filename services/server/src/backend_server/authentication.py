"""Who is calling (`rest-api.md`, section 3): tokens, JWT cookies, HTTP Basic for organizations.

Schemes are tried in the reference's order: implicit token, JWT, named token (both token kinds share
one table here), then HTTP Basic on the routes that accept it. Every route but health checks,
`/info/` and the login endpoints requires a caller with a channel.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from backend_common.db.local import TokenKind, UserRole
from backend_common.passwords import verify_secret
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from backend_server import jwt
from backend_server.data import accounts
from backend_server.errors import FORBIDDEN, NOT_AUTHENTICATED, ApiError
from backend_server.state import ServerState, in_transaction, server_state

CHANNEL_HEADER = "substra-channel-name"
PROXY_HEADER = "substra-proxy-asset"
SIGNATURE_COOKIE = "signature"

# Verifying an Argon2 hash costs tens of milliseconds; workers of other organizations authenticate
# every download. Successful checks are remembered briefly, keyed by a hash of the credentials.
_BASIC_CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class Caller:
    """The authenticated caller. Organizations (HTTP Basic) have no user row and no role."""

    username: str
    channel: str
    role: UserRole | None = None
    user_id: uuid.UUID | None = None
    organization_id: str | None = None
    token_id: uuid.UUID | None = None
    # `Substra-Proxy-Asset: True`: another backend relays a download for its own user.
    proxy_asset: bool = False

    @property
    def is_organization(self) -> bool:
        return self.organization_id is not None

    @property
    def is_admin(self) -> bool:
        return self.role == UserRole.ADMIN

    def acting_organization(self, own_id: str) -> str:
        """Whose permissions apply: the calling organization, or this one for its own users."""
        return self.organization_id or own_id


def unauthenticated(detail: str = NOT_AUTHENTICATED, *, implicit_enabled: bool = True) -> ApiError:
    scheme = "Token" if implicit_enabled else 'JWT realm="api"'
    return ApiError(401, detail, headers={"WWW-Authenticate": scheme})


class _CredentialCache:
    def __init__(self) -> None:
        self._entries: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(kind: str, name: str, secret: str, stored_hash: str) -> str:
        # The stored hash is part of the key: a rotated secret invalidates the entry.
        return hashlib.sha256(f"{kind}\0{name}\0{secret}\0{stored_hash}".encode()).hexdigest()

    def verified(self, kind: str, name: str, secret: str, stored_hash: str) -> bool:
        key = self._key(kind, name, secret, stored_hash)
        now = time.monotonic()
        with self._lock:
            expiry = self._entries.get(key)
            if expiry is not None and expiry > now:
                return True
        if not verify_secret(stored_hash, secret):
            return False
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries = {k: v for k, v in self._entries.items() if v > now}
            self._entries[key] = now + _BASIC_CACHE_SECONDS
        return True


_credentials = _CredentialCache()


def _user_caller(
    state: ServerState,
    *,
    username: str,
    channel: str | None,
    role: UserRole,
    user_id: uuid.UUID,
    token_id: uuid.UUID | None,
) -> Caller:
    if channel is None:
        # Awaiting approval (OIDC sign-up without a default channel).
        raise ApiError(403, FORBIDDEN)
    return Caller(username=username, channel=channel, role=role, user_id=user_id, token_id=token_id)


def _token_caller(session: Session, state: ServerState, value: str, now: datetime) -> Caller:
    owner = accounts.find_token(session, value)
    implicit_enabled = state.settings.auth.expiry_token_enabled
    if owner is None or not owner.is_active or (owner.kind == TokenKind.IMPLICIT and not implicit_enabled):
        raise unauthenticated("Invalid token.", implicit_enabled=implicit_enabled)
    if owner.expires_at <= now:
        raise unauthenticated("The token is expired", implicit_enabled=implicit_enabled)
    return _user_caller(
        state,
        username=owner.username,
        channel=owner.channel,
        role=owner.role,
        user_id=owner.user_id,
        token_id=owner.token_id,
    )


def _jwt_caller(session: Session, state: ServerState, header_payload: str, signature: str | None) -> Caller:
    secret = state.settings.auth.secret_key
    implicit_enabled = state.settings.auth.expiry_token_enabled
    if not secret or not signature:
        raise unauthenticated(implicit_enabled=implicit_enabled)
    try:
        payload = jwt.decode(f"{header_payload}.{signature}", secret)
    except jwt.InvalidTokenError as error:
        raise unauthenticated(f"Given token not valid for any token type: {error}") from None
    if payload.get("token_type") != "access":
        raise unauthenticated("Given token not valid for any token type")
    try:
        user = accounts.get_user_by_id(session, uuid.UUID(str(payload.get("user_id"))))
    except ValueError:
        user = None
    if user is None or not user.is_active:
        raise unauthenticated("User not found")
    return _user_caller(
        state, username=user.username, channel=user.channel, role=user.role, user_id=user.id, token_id=None
    )


def _basic_caller(session: Session, state: ServerState, encoded: str, channel_header: str | None) -> Caller:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise unauthenticated("Invalid basic header. Credentials not correctly base64 encoded.") from None
    username, separator, password = decoded.partition(":")
    if not separator:
        raise unauthenticated("Invalid basic header. Credentials string should not contain spaces.")
    secret_hash = accounts.incoming_secret_hash(session, username)
    if secret_hash is not None:
        if not _credentials.verified("organization", username, password, secret_hash):
            raise unauthenticated("Invalid username/password.")
        channel = resolve_channel(state, channel_header)
        return Caller(username=username, channel=channel, organization_id=username)
    user = accounts.get_user(session, username)
    if (
        user is None
        or not user.is_active
        or not _credentials.verified("user", username, password, user.password_hash)
    ):
        raise unauthenticated("Invalid username/password.")
    return _user_caller(
        state, username=user.username, channel=user.channel, role=user.role, user_id=user.id, token_id=None
    )


def resolve_channel(state: ServerState, channel_header: str | None) -> str:
    if not channel_header:
        raise ApiError(400, "Could not determine channel name")
    if state.settings.organization.channel(channel_header) is None:
        raise ApiError(400, f"Channel {channel_header} is not served by this organization")
    return channel_header


def identify(session: Session, state: ServerState, request: Request, *, basic: bool) -> Caller:
    """The caller of `request`, or an `ApiError` (401, 403, or 400 without a channel)."""
    implicit_enabled = state.settings.auth.expiry_token_enabled
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    keyword = scheme.lower()
    caller: Caller
    if keyword == "token" and credentials:
        caller = _token_caller(session, state, credentials, datetime.now(UTC))
    elif keyword in ("jwt", "bearer") and credentials:
        caller = _jwt_caller(session, state, credentials, request.cookies.get(SIGNATURE_COOKIE))
    elif keyword == "basic" and credentials and basic:
        caller = _basic_caller(session, state, credentials, request.headers.get(CHANNEL_HEADER))
    else:
        raise unauthenticated(implicit_enabled=implicit_enabled)
    proxy = request.headers.get(PROXY_HEADER, "").strip().lower() == "true"
    if proxy and caller.is_organization:
        caller = Caller(
            username=caller.username,
            channel=caller.channel,
            organization_id=caller.organization_id,
            proxy_asset=True,
        )
    return caller


Handler = Callable[[Request, Caller], Awaitable[Response]]


def authenticated(handler: Handler, *, basic: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint `handler(request, caller)` behind authentication; `basic` also accepts HTTP Basic."""

    async def endpoint(request: Request) -> Response:
        state = server_state(request)
        caller = await in_transaction(request, lambda session: identify(session, state, request, basic=basic))
        return await handler(request, caller)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


ReadHandler = Callable[[Session, Request, Caller], Response]


def authenticated_read(
    handler: ReadHandler, *, basic: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """A read endpoint run whole on a worker thread, in one transaction with the authentication.

    Reads are most of the traffic (SDK polling, list walks): one thread hop and one connection
    checkout per request instead of two.
    """

    async def endpoint(request: Request) -> Response:
        state = server_state(request)

        def run(session: Session) -> Response:
            return handler(session, request, identify(session, state, request, basic=basic))

        return await in_transaction(request, run)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise ApiError(403, FORBIDDEN)


def require_self_organization(caller: Caller, own_id: str) -> None:
    """Writes reserved to this backend's own worker (HTTP Basic with its own organization id)."""
    if caller.organization_id != own_id:
        raise ApiError(403, FORBIDDEN)
