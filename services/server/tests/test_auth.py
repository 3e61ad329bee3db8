"""Authentication: tokens, named tokens, JWT cookies, organizations' HTTP Basic, channels (rest-api 3)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from backend_common.db.local import ApiToken, TokenKind
from backend_server.app import create_app
from backend_server.testing import (
    ORG1,
    ORG2,
    ORG_SECRETS,
    PASSWORD,
    Backend,
    Replica,
    server_settings,
)
from sqlalchemy import update
from starlette.testclient import TestClient

ACCEPT = {"Accept": "application/json;version=0.0"}


def basic(
    organization: str, secret: str, channel: str | None = "mychannel", proxy: bool = False
) -> dict[str, str]:
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{organization}:{secret}".encode()).decode(),
        **ACCEPT,
    }
    if channel:
        headers["Substra-Channel-Name"] = channel
    if proxy:
        headers["Substra-Proxy-Asset"] = "True"
    return headers


def login(backend: Backend, username: str = "admin", password: str = PASSWORD) -> dict[str, str]:
    response = backend.http().post(
        "/api-token-auth/", data={"username": username, "password": password}, headers=ACCEPT
    )
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


def test_login_gives_expiring_tokens_with_an_aware_expiry(backend: Backend) -> None:
    first, second = login(backend), login(backend)
    assert set(first) == {"id", "token", "expires_at", "created_at"}
    assert len(first["token"]) == 40 and first["token"] != second["token"]
    expires_at = datetime.fromisoformat(first["expires_at"])
    assert expires_at.tzinfo is not None
    assert timedelta(hours=23) < expires_at - datetime.now(UTC) <= timedelta(hours=24)
    for token in (first, second):
        response = backend.http().get(
            "/task/", headers={"Authorization": f"Token {token['token']}", **ACCEPT}
        )
        assert response.status_code == 200
    json_login = backend.http().post("/api-token-auth/", json={"username": "admin", "password": PASSWORD})
    assert json_login.status_code == 200


def test_bad_logins(backend: Backend) -> None:
    wrong = backend.http().post(
        "/api-token-auth/", data={"username": "admin", "password": "nope"}, headers=ACCEPT
    )
    assert wrong.status_code == 400 and "non_field_errors" in wrong.json()
    missing = backend.http().post("/api-token-auth/", data={"username": "admin"}, headers=ACCEPT)
    assert missing.status_code == 400


def test_unauthenticated_and_invalid_tokens(backend: Backend) -> None:
    client = backend.http()
    for path in ("/task/", "/function/", "/compute_plan/", "/organization/", "/users/", "/model/"):
        response = client.get(path, headers=ACCEPT)
        assert response.status_code == 401, path
        assert response.json() == {"detail": "Authentication credentials were not provided."}
        assert response.headers["www-authenticate"] == "Token"
    invalid = client.get("/task/", headers={"Authorization": "Token " + "0" * 40, **ACCEPT})
    assert invalid.status_code == 401 and invalid.json() == {"detail": "Invalid token."}
    with backend.session() as session:
        session.execute(update(ApiToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    expired = client.get("/task/", headers=backend.headers())
    assert expired.status_code == 401 and expired.json() == {"detail": "The token is expired"}
    # Health checks and /info/ need no credentials.
    assert client.get("/liveness").status_code == 200
    anonymous = client.get("/info/").json()
    assert anonymous == {
        "host": "http://127.0.0.1:8000",
        "organization_id": ORG1,
        "organization_name": "myorg1msp",
        "config": {},
        "auth": {},
    }


def test_logout_deletes_only_the_callers_token(backend: Backend) -> None:
    session_token = login(backend)
    headers = {"Authorization": f"Token {session_token['token']}", **ACCEPT}
    listed = backend.http().get("/active-api-tokens/", headers=headers).json()
    assert session_token["id"] in {token["id"] for token in listed["implicit_tokens"]}
    backend.add_user("someone")
    other = backend.http().delete(
        f"/active-api-tokens/?id={session_token['id']}", headers=backend.headers("someone")
    )
    assert other.status_code == 404 and other.json() == {"detail": "Token not found"}
    removed = backend.http().delete(f"/active-api-tokens/?id={session_token['id']}", headers=headers)
    assert removed.status_code == 200 and removed.json() == {"detail": "Token removed"}
    assert backend.http().get("/task/", headers=headers).status_code == 401
    assert backend.http().get("/task/", headers=backend.headers()).status_code == 200


def test_named_tokens(backend: Backend) -> None:
    expires = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    created = backend.http().post(
        "/api-token/", json={"note": "ci", "expires_at": expires}, headers=backend.headers()
    )
    assert created.status_code == 200
    body = created.json()
    assert body["note"] == "ci" and len(body["token"]) == 40
    headers = {"Authorization": f"Token {body['token']}", **ACCEPT}
    assert backend.http().get("/me/", headers=headers).json()["username"] == "admin"
    listed = backend.http().get("/active-api-tokens/", headers=headers).json()
    assert [token["note"] for token in listed["tokens"]] == ["ci"]
    missing = backend.http().post("/api-token/", json={"note": "x"}, headers=backend.headers())
    assert missing.status_code == 400
    with backend.session() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.kind == TokenKind.NAMED)
            .values(expires_at=datetime.now(UTC) - timedelta(1))
        )
    assert backend.http().get("/me/", headers=headers).status_code == 401


def test_users_without_channel_and_other_channels(backend: Backend) -> None:
    backend.add_user("pending", channel=None)
    assert backend.http().get("/task/", headers=backend.headers("pending")).status_code == 403
    backend.add_user("elsewhere", channel="yourchannel")
    with backend.session() as session:
        replica = Replica(session)
        function = replica.function()
    response = backend.http().get(f"/function/{function.key}/", headers=backend.headers("elsewhere"))
    # The user's channel is not served by this backend's configuration, but reads are scoped anyway.
    assert response.status_code == 404


def test_organizations_authenticate_with_basic_on_download_routes_only(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        function = replica.function(authorized=[ORG2])
        task = replica.task(function, replica.plan())
        model = replica.model(task)
    client = backend.http()
    headers = basic(ORG2, ORG_SECRETS[ORG2])
    assert client.get(f"/model/{model.key}/", headers=headers).status_code == 200
    assert client.get("/model/", headers=headers).status_code == 200
    assert client.get("/task/", headers=headers).status_code == 401
    wrong = client.get("/model/", headers=basic(ORG2, "wrong"))
    assert wrong.status_code == 401
    unknown = client.get("/model/", headers=basic("Stranger", "x"))
    assert unknown.status_code == 401
    no_channel = client.get("/model/", headers=basic(ORG2, ORG_SECRETS[ORG2], channel=None))
    assert no_channel.status_code == 400 and no_channel.json() == {
        "detail": "Could not determine channel name"
    }
    other_channel = client.get("/model/", headers=basic(ORG2, ORG_SECRETS[ORG2], channel="nochannel"))
    assert other_channel.status_code == 400
    # A human user may use Basic too on these routes.
    user = client.get(
        "/model/",
        headers={"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()},
    )
    assert user.status_code == 200
    # Writes of task profiles and local models are reserved to this backend's own organization.
    refused = client.post("/task_profiling/", json={"compute_task_key": task.key}, headers=headers)
    assert refused.status_code == 403
    created = client.post(
        "/task_profiling/", json={"compute_task_key": task.key}, headers=basic(ORG1, ORG_SECRETS[ORG1])
    )
    assert created.status_code == 201


@pytest.fixture
def implicit_disabled(database_url: str, media_root: Path) -> Iterator[Backend]:
    settings = server_settings(database_url, media_root=media_root)
    settings = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"expiry_token_enabled": False})}
    )
    backend = Backend(settings=settings, database_url=database_url)
    backend.add_user("admin")
    with TestClient(create_app(settings)) as client:
        backend.client = client
        yield backend


def test_implicit_login_disabled(implicit_disabled: Backend) -> None:
    response = implicit_disabled.http().post(
        "/api-token-auth/", data={"username": "admin", "password": PASSWORD}
    )
    assert response.status_code == 403
    assert response.json()["substra_identifier"] == "implicit_login_disabled"
    refused = implicit_disabled.http().get("/task/", headers=implicit_disabled.headers())
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'JWT realm="api"'


def test_jwt_cookies_login_refresh_and_logout(backend: Backend) -> None:
    client = backend.http()
    assert client.post("/me/login/", json={"username": "admin", "password": "nope"}).status_code == 401
    logged = client.post("/me/login/", json={"username": "admin", "password": PASSWORD})
    assert logged.status_code == 200
    assert logged.json()["token_type"] == "access"
    header_payload = logged.cookies["header.payload"]
    response = client.get("/me/", headers={"Authorization": f"JWT {header_payload}", **ACCEPT})
    assert response.status_code == 200 and response.json()["role"] == "ADMIN"
    old_refresh = logged.cookies["refresh"]
    refreshed = client.post("/me/refresh/")
    assert refreshed.status_code == 200
    client.cookies.set("refresh", old_refresh)
    assert client.post("/me/refresh/").status_code == 401  # rotated: the old one is revoked
    assert client.get("/me/logout/").status_code == 200


def test_throttled_anonymous_logins(database_url: str, media_root: Path) -> None:
    settings = server_settings(database_url, media_root=media_root, DEFAULT_THROTTLE_RATES=2)
    with TestClient(create_app(settings)) as client:
        statuses = [
            client.post("/api-token-auth/", data={"username": "a", "password": "b"}).status_code
            for _ in range(3)
        ]
    assert statuses == [400, 400, 429]
