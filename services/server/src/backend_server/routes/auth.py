"""Login and tokens: `/api-token-auth/`, `/api-token/`, `/active-api-tokens/`, `/me/...`, and `/info/`."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from backend_common.db.local import TokenKind, User
from backend_common.passwords import verify_secret
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend_server import jwt, render
from backend_server.authentication import SIGNATURE_COOKIE, Caller, authenticated, identify, unauthenticated
from backend_server.data import accounts
from backend_server.errors import ApiError, bad_request
from backend_server.http import base_url, body_fields, json_response
from backend_server.listing import parse_datetime
from backend_server.state import ServerState, blocking, in_transaction, server_state

HEADER_PAYLOAD_COOKIE = "header.payload"
REFRESH_COOKIE = "refresh"


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def throttled(request: Request, scope: str, ident: str) -> None:
    if not server_state(request).throttle.allow(scope, ident):
        raise ApiError(429, "Request was throttled.")


def _check_credentials(session: Session, username: str, password: str) -> User:
    user = accounts.get_user(session, username)
    if user is None or not user.is_active or not verify_secret(user.password_hash, password):
        raise ApiError(
            400,
            "Unable to log in with provided credentials.",
            extra={"non_field_errors": ["Unable to log in with provided credentials."]},
        )
    return user


async def login(request: Request) -> Response:
    """Implicit token login of the SDK (form-encoded) or any JSON client."""
    state = server_state(request)
    throttled(request, "anonymous", _client_ip(request))
    if not state.settings.auth.expiry_token_enabled:
        raise ApiError(
            403,
            "Implicit login is disabled on this server",
            extra={"substra_identifier": "implicit_login_disabled"},
        )
    fields = await body_fields(request)
    username, password = str(fields.get("username", "")), str(fields.get("password", ""))
    if not username or not password:
        raise bad_request(
            "username and password are required", non_field_errors=["username and password are required"]
        )
    throttled(request, "login", username)
    lifetime = timedelta(minutes=state.settings.auth.expiry_token_lifetime_minutes)

    def create(session: Session) -> dict[str, Any]:
        user = _check_credentials(session, username, password)
        now = datetime.now(UTC)
        accounts.delete_expired_tokens(session, user.id, TokenKind.IMPLICIT, now)
        token, value = accounts.create_token(
            session, user.id, kind=TokenKind.IMPLICIT, expires_at=now + lifetime, now=now
        )
        return {
            "id": str(token.id),
            "token": value,
            # Timezone-aware, or the SDK's login crashes computing the session's remaining time.
            "expires_at": token.expires_at.astimezone(UTC).isoformat(),
            "created_at": token.created_at.astimezone(UTC).isoformat(),
        }

    return json_response(await in_transaction(request, create))


async def create_named_token(request: Request, caller: Caller) -> Response:
    fields = await body_fields(request)
    if not fields.get("expires_at"):
        raise bad_request("expires_at: This field is required.", expires_at=["This field is required."])
    expires_at = parse_datetime(str(fields["expires_at"]), "expires_at")
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    note = fields.get("note")
    if caller.user_id is None:
        raise ApiError(403, "Only users have API tokens")
    user_id = caller.user_id

    def create(session: Session) -> dict[str, Any]:
        now = datetime.now(UTC)
        token, value = accounts.create_token(
            session,
            user_id,
            kind=TokenKind.NAMED,
            expires_at=expires_at,
            now=now,
            note=None if note is None else str(note),
        )
        return {**_named(token), "token": value}

    return json_response(await in_transaction(request, create))


def _named(token: Any) -> dict[str, Any]:
    return {
        "id": str(token.id),
        "note": token.note,
        "expires_at": render.iso(token.expires_at),
        "created_at": render.iso(token.created_at),
    }


async def active_tokens(request: Request, caller: Caller) -> Response:
    if caller.user_id is None:
        return json_response({"tokens": [], "implicit_tokens": []})
    user_id = caller.user_id

    def load(session: Session) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "tokens": [
                _named(token) for token in accounts.user_tokens(session, user_id, TokenKind.NAMED, now)
            ],
            "implicit_tokens": [
                {
                    "id": str(token.id),
                    "expires_at": render.iso(token.expires_at),
                    "created_at": render.iso(token.created_at),
                }
                for token in accounts.user_tokens(session, user_id, TokenKind.IMPLICIT, now)
            ],
        }

    return json_response(await in_transaction(request, load))


async def delete_token(request: Request, caller: Caller) -> Response:
    """The SDK's logout: `DELETE /active-api-tokens/?id=<id>` (only the caller's own tokens)."""
    raw = request.query_params.get("id", "")
    try:
        token_id = uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, "Token not found") from None
    user_id = caller.user_id
    if user_id is None:
        raise ApiError(404, "Token not found")
    deleted = await in_transaction(
        request, lambda session: accounts.delete_user_token(session, user_id, token_id)
    )
    if not deleted:
        raise ApiError(404, "Token not found")
    return json_response({"detail": "Token removed"})


# --- JWT cookies of the web frontend ---------------------------------------------------------------


def _secret(state: ServerState) -> str:
    if not state.settings.auth.secret_key:
        raise ApiError(400, "JWT login is not configured on this server (SECRET_KEY is empty)")
    return state.settings.auth.secret_key


def _jwt_pair(state: ServerState, user: User) -> tuple[dict[str, Any], str, str, int, int]:
    now = int(datetime.now(UTC).timestamp())
    access_lifetime = state.settings.auth.access_token_lifetime_minutes * 60
    refresh_lifetime = state.settings.auth.refresh_token_lifetime_minutes * 60
    access = {
        "token_type": "access",
        "exp": now + access_lifetime,
        "iat": now,
        "jti": secrets.token_hex(16),
        "user_id": str(user.id),
    }
    refresh = {**access, "token_type": "refresh", "exp": now + refresh_lifetime, "jti": secrets.token_hex(16)}
    secret = _secret(state)
    return access, jwt.encode(access, secret), jwt.encode(refresh, secret), access_lifetime, refresh_lifetime


def _cookie_response(state: ServerState, user: User) -> Response:
    payload, access, refresh, access_lifetime, refresh_lifetime = _jwt_pair(state, user)
    header_payload, _, signature = access.rpartition(".")
    response = json_response(payload)
    secure = not state.settings.api.debug
    domain = state.settings.api.common_host_domain
    response.set_cookie(
        HEADER_PAYLOAD_COOKIE,
        header_payload,
        max_age=access_lifetime,
        secure=secure,
        httponly=False,
        domain=domain,
    )
    response.set_cookie(
        SIGNATURE_COOKIE, signature, max_age=access_lifetime, secure=secure, httponly=True, domain=domain
    )
    response.set_cookie(
        REFRESH_COOKIE, refresh, max_age=refresh_lifetime, secure=secure, httponly=True, domain=domain
    )
    return response


async def jwt_login(request: Request) -> Response:
    state = server_state(request)
    throttled(request, "anonymous", _client_ip(request))
    fields = await body_fields(request)
    username, password = str(fields.get("username", "")), str(fields.get("password", ""))
    throttled(request, "login", username)

    def check(session: Session) -> User:
        try:
            return _check_credentials(session, username, password)
        except ApiError:
            raise ApiError(401, "wrong username password") from None

    user = await in_transaction(request, check)
    return _cookie_response(state, user)


async def jwt_refresh(request: Request) -> Response:
    state = server_state(request)
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise ApiError(400, "No refresh token")
    secret = _secret(state)
    try:
        payload = jwt.decode(token, secret)
    except jwt.InvalidTokenError as error:
        raise unauthenticated(f"Token is invalid or expired: {error}") from None
    if payload.get("token_type") != "refresh":
        raise unauthenticated("Token has wrong type")

    def rotate(session: Session) -> User:
        jti = str(payload.get("jti", ""))
        if accounts.is_revoked(session, jti):
            raise unauthenticated("Token is blacklisted")
        user = accounts.get_user_by_id(session, uuid.UUID(str(payload.get("user_id"))))
        if user is None or not user.is_active:
            raise unauthenticated("User not found")
        now = datetime.now(UTC)
        accounts.revoke(session, jti, datetime.fromtimestamp(int(payload.get("exp", 0)), UTC), now)
        return user

    user = await in_transaction(request, rotate)
    return _cookie_response(state, user)


async def jwt_logout(request: Request) -> Response:
    state = server_state(request)
    token = request.cookies.get(REFRESH_COOKIE)
    if token and state.settings.auth.secret_key:
        try:
            payload = jwt.decode(token, state.settings.auth.secret_key)
        except jwt.InvalidTokenError:
            payload = None
        if payload is not None:
            expiry = datetime.fromtimestamp(int(payload.get("exp", 0)), UTC)
            jti = str(payload.get("jti", ""))
            await in_transaction(
                request, lambda session: accounts.revoke(session, jti, expiry, datetime.now(UTC))
            )
    response = json_response({})
    domain = state.settings.api.common_host_domain
    for name in (HEADER_PAYLOAD_COOKIE, SIGNATURE_COOKIE, REFRESH_COOKIE):
        response.delete_cookie(name, domain=domain)
    return response


async def me(request: Request, caller: Caller) -> Response:
    return json_response(
        {
            "username": caller.username,
            "channel": caller.channel,
            "role": caller.role.value if caller.role else None,
            "organization_id": caller.organization_id,
        }
    )


# --- /info/ ---------------------------------------------------------------------------------------------


async def info(request: Request) -> Response:
    """Anonymous callers get the organization; authenticated ones also the channel and versions."""
    state = server_state(request)
    settings = state.settings
    document: dict[str, Any] = {
        "host": settings.http.default_domain or base_url(request),
        "organization_id": settings.msp_id,
        "organization_name": settings.organization.org_name,
        "config": {},
        "auth": {},
    }
    caller: Caller | None = None
    if request.headers.get("authorization"):
        caller = await in_transaction(request, lambda session: identify(session, state, request, basic=True))
    else:
        throttled(request, "anonymous", _client_ip(request))
    if caller is not None:
        channel = settings.organization.channel(caller.channel)
        orchestrator_version = await blocking(lambda: state.orchestrator_version(caller.channel))
        document.update(
            {
                "channel": caller.channel,
                "version": settings.organization.backend_version,
                "orchestrator_version": orchestrator_version,
                "config": {"model_export_enabled": bool(channel and channel.model_export_enabled)},
                "user": caller.username,
            }
        )
        if caller.role is not None:
            document["user_role"] = caller.role.value
    return json_response(document)


routes = [
    Route("/info/", info, methods=["GET"]),
    Route("/api-token-auth/", login, methods=["POST"]),
    Route("/api-token/", authenticated(create_named_token), methods=["POST"]),
    Route("/active-api-tokens/", authenticated(active_tokens), methods=["GET"]),
    Route("/active-api-tokens/", authenticated(delete_token), methods=["DELETE"]),
    Route("/me/", authenticated(me), methods=["GET"]),
    Route("/me/login/", jwt_login, methods=["POST"]),
    Route("/me/refresh/", jwt_refresh, methods=["POST"]),
    Route("/me/logout/", jwt_logout, methods=["GET"]),
]
