"""`/users/` and `/users-awaiting-approval/`: accounts of the caller's channel (`rest-api.md` 3.4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from backend_common.db.local import User, UserRole
from backend_common.db.replica import ComputePlan
from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend_server import jwt
from backend_server.authentication import Caller, authenticated, require_admin
from backend_server.data import accounts
from backend_server.data.common import Page
from backend_server.errors import ApiError, bad_request, forbidden, not_found
from backend_server.http import body_fields, json_response, page_of, paginated, params
from backend_server.listing import DEFAULT_PAGE_SIZE, check_page, match_filter
from backend_server.render import dumps
from backend_server.routes.auth import throttled
from backend_server.state import ServerState, in_transaction, server_state

RESET_TOKEN_LIFETIME = timedelta(days=7)
PASSWORD_MAX_LENGTH = 64
_COMMON_PASSWORDS = frozenset(
    {"password", "123456789", "qwertyuiop", "password123", "iloveyou", "administrator", "substra"}
)


def representation(user: User) -> dict[str, Any]:
    return {
        "username": user.username,
        "channel": user.channel,
        "role": user.role.value,
        "is_external_user": user.is_external,
    }


def validate_password(state: ServerState, username: str, password: str) -> None:
    """The production policy minus zxcvbn: length, not numeric, not the username, not common."""
    problems = []
    minimum = state.settings.api.password_min_length
    if len(password) < minimum:
        problems.append(f"This password is too short. It must contain at least {minimum} characters.")
    if len(password) > PASSWORD_MAX_LENGTH:
        problems.append(
            f"This password is too long. It must contain at most {PASSWORD_MAX_LENGTH} characters."
        )
    if password.isdigit():
        problems.append("This password is entirely numeric.")
    if username and username.lower() in password.lower():
        problems.append("The password is too similar to the username.")
    if password.lower() in _COMMON_PASSWORDS:
        problems.append("This password is too common.")
    if problems:
        raise ApiError(400, " ".join(problems), extra={"password": problems})


def parse_role(value: Any) -> UserRole:
    try:
        return UserRole(str(value).upper())
    except ValueError:
        raise bad_request(f"role: “{value}” is not a valid choice.", role=["Not a valid choice."]) from None


def _channel_user(session: Session, caller: Caller, username: str) -> User:
    user = accounts.get_user(session, username)
    if user is None or user.channel != caller.channel or not user.is_active:
        raise not_found("User not found")
    return user


async def list_users(request: Request, caller: Caller) -> Response:
    query, page = params(request), page_of(request, DEFAULT_PAGE_SIZE)
    roles = query.csv("role")
    descending = (query.get("ordering") or "").strip().startswith("-")

    def load(session: Session) -> Page:
        conditions: list[ColumnElement[bool]] = []
        if roles is not None:
            conditions.append(User.role.in_([parse_role(role) for role in roles]))
        match = match_filter(query, [User.username])
        if match is not None:
            conditions.append(match)
        count, users = accounts.channel_users(
            session,
            caller.channel,
            conditions=conditions,
            descending=descending,
            offset=page.offset,
            limit=page.size,
        )
        check_page(page, count)
        return Page(count, [dumps(representation(user)) for user in users])

    return paginated(request, page, await in_transaction(request, load))


async def create_user(request: Request, caller: Caller) -> Response:
    require_admin(caller)
    state = server_state(request)
    fields = await body_fields(request)
    username, password = str(fields.get("username", "")).strip(), str(fields.get("password", ""))
    if not username or len(username) > 150:
        raise bad_request("username: This field is required (at most 150 characters).")
    role = parse_role(fields.get("role", UserRole.USER.value))
    validate_password(state, username, password)

    def create(session: Session) -> dict[str, Any]:
        if accounts.get_user(session, username) is not None:
            raise bad_request("Username already exists")
        user = accounts.create_user(
            session,
            username=username,
            password=password,
            channel=caller.channel,
            role=role,
            now=datetime.now(UTC),
        )
        return representation(user)

    return json_response(await in_transaction(request, create), status=201)


async def get_user(request: Request, caller: Caller) -> Response:
    username = str(request.path_params["username"])
    user = await in_transaction(request, lambda session: _channel_user(session, caller, username))
    return json_response(representation(user))


async def update_user(request: Request, caller: Caller) -> Response:
    require_admin(caller)
    username = str(request.path_params["username"])
    fields = await body_fields(request)
    role = parse_role(fields.get("role"))

    def update(session: Session) -> dict[str, Any]:
        user = _channel_user(session, caller, username)
        user.role = role
        return representation(user)

    return json_response(await in_transaction(request, update))


async def delete_user(request: Request, caller: Caller) -> Response:
    require_admin(caller)
    username = str(request.path_params["username"])
    if username == caller.username:
        raise bad_request("You cannot delete your own account")

    def delete(session: Session) -> None:
        user = _channel_user(session, caller, username)
        # Plans keep a "deleted" creator, as the reference's virtual user.
        session.execute(
            update(ComputePlan).where(ComputePlan.creator == user.username).values(creator="deleted")
        )
        session.delete(user)

    await in_transaction(request, delete)
    return Response(status_code=204)


async def change_password(request: Request, caller: Caller) -> Response:
    username = str(request.path_params["username"])
    if username != caller.username:
        raise forbidden()
    fields = await body_fields(request)
    password = str(fields.get("password", ""))
    validate_password(server_state(request), username, password)

    def change(session: Session) -> dict[str, Any]:
        user = _channel_user(session, caller, username)
        accounts.set_password(session, user, password)
        return representation(user)

    return json_response(await in_transaction(request, change))


def _reset_key(state: ServerState, user: User) -> str:
    """XOR of the password hash with SECRET_KEY: the token dies with the password or the secret."""
    secret = state.settings.auth.secret_key
    if not secret:
        raise ApiError(400, "Password reset is not configured on this server (SECRET_KEY is empty)")
    password_hash = user.password_hash
    length = max(len(password_hash), len(secret))
    return "".join(
        chr(ord(password_hash[index % len(password_hash)]) ^ ord(secret[index % len(secret)]))
        for index in range(length)
    )


async def reset_password(request: Request, caller: Caller) -> Response:
    require_admin(caller)
    state = server_state(request)
    username = str(request.path_params["username"])
    user = await in_transaction(request, lambda session: _channel_user(session, caller, username))
    expiry = int((datetime.now(UTC) + RESET_TOKEN_LIFETIME).timestamp())
    return json_response({"reset_password_token": jwt.encode({"exp": expiry}, _reset_key(state, user))})


def _verified_user(session: Session, state: ServerState, username: str, token: str) -> User:
    user = accounts.get_user(session, username)
    if user is None:
        raise ApiError(401, "token not valid: unknown user")
    try:
        jwt.decode(token, _reset_key(state, user))
    except jwt.InvalidTokenError as error:
        raise ApiError(401, f"token not valid: {error}") from None
    return user


async def verify_token(request: Request) -> Response:
    state = server_state(request)
    throttled(request, "anonymous", request.client.host if request.client else "unknown")
    username, token = str(request.path_params["username"]), request.query_params.get("token", "")
    await in_transaction(request, lambda session: _verified_user(session, state, username, token))
    return json_response({})


async def set_password(request: Request) -> Response:
    state = server_state(request)
    throttled(request, "anonymous", request.client.host if request.client else "unknown")
    username = str(request.path_params["username"])
    fields = await body_fields(request)
    token, password = str(fields.get("token", "")), str(fields.get("password", ""))

    def change(session: Session) -> dict[str, Any]:
        try:
            user = _verified_user(session, state, username, token)
        except ApiError:
            raise ApiError(401, "must provide a valid token to set a new password") from None
        validate_password(state, username, password)
        accounts.set_password(session, user, password)
        return representation(user)

    return json_response(await in_transaction(request, change))


async def awaiting_approval(request: Request, caller: Caller) -> Response:
    require_admin(caller)
    users = await in_transaction(request, accounts.users_awaiting_approval)
    return json_response([{"username": user.username, "email": user.email} for user in users])


async def approve_user(request: Request, caller: Caller) -> Response:
    require_admin(caller)
    username = request.query_params.get("username", "")
    fields = await body_fields(request)
    role = parse_role(fields.get("role", UserRole.USER.value))

    def approve(session: Session) -> dict[str, Any]:
        user = accounts.get_user(session, username)
        if user is None or user.channel is not None:
            raise not_found("User not found")
        user.channel, user.role = caller.channel, role
        return representation(user)

    return json_response(await in_transaction(request, approve))


async def remove_awaiting_user(request: Request, caller: Caller) -> Response:
    require_admin(caller)
    username = request.query_params.get("username", "")

    def remove(session: Session) -> None:
        user = accounts.get_user(session, username)
        if user is None or user.channel is not None:
            raise not_found("User not found")
        session.delete(user)

    await in_transaction(request, remove)
    return json_response({"detail": "User removed"})


routes = [
    Route("/users/", authenticated(list_users), methods=["GET"]),
    Route("/users/", authenticated(create_user), methods=["POST"]),
    Route("/users/{username}/", authenticated(get_user), methods=["GET"]),
    Route("/users/{username}/", authenticated(update_user), methods=["PUT"]),
    Route("/users/{username}/", authenticated(delete_user), methods=["DELETE"]),
    Route("/users/{username}/password/", authenticated(change_password), methods=["PUT"]),
    Route("/users/{username}/reset_password/", authenticated(reset_password), methods=["POST"]),
    Route("/users/{username}/verify_token/", verify_token, methods=["GET"]),
    Route("/users/{username}/set_password/", set_password, methods=["POST"]),
    Route("/users-awaiting-approval/", authenticated(awaiting_approval), methods=["GET"]),
    Route("/users-awaiting-approval/", authenticated(approve_user), methods=["PUT"]),
    Route("/users-awaiting-approval/", authenticated(remove_awaiting_user), methods=["DELETE"]),
]
