"""Users of a channel and their management by admins (rest-api 3.4)."""

from __future__ import annotations

from backend_common.db.local import UserRole
from backend_server.testing import PASSWORD, Backend

ACCEPT = {"Accept": "application/json;version=0.0"}
NEW_PASSWORD = "another-long-password-2"


def test_admins_manage_users_of_their_channel(backend: Backend) -> None:
    client, admin = backend.http(), backend.headers()
    created = client.post(
        "/users/", json={"username": "alice", "password": PASSWORD, "role": "USER"}, headers=admin
    )
    assert created.status_code == 201
    assert created.json() == {
        "username": "alice",
        "channel": "mychannel",
        "role": "USER",
        "is_external_user": False,
    }
    duplicate = client.post("/users/", json={"username": "alice", "password": PASSWORD}, headers=admin)
    assert duplicate.status_code == 400 and duplicate.json()["detail"] == "Username already exists"
    weak = client.post("/users/", json={"username": "bob", "password": "123456789123"}, headers=admin)
    assert weak.status_code == 400 and "password" in weak.json()
    backend.add_user("outsider", channel="yourchannel")
    listed = client.get("/users/", headers=admin).json()
    assert [user["username"] for user in listed["results"]] == ["admin", "alice"]
    assert [
        user["username"] for user in client.get("/users/?role=ADMIN", headers=admin).json()["results"]
    ] == ["admin"]
    assert client.get("/users/outsider/", headers=admin).status_code == 404
    promoted = client.put("/users/alice/", json={"role": "ADMIN"}, headers=admin)
    assert promoted.status_code == 200 and promoted.json()["role"] == "ADMIN"
    assert client.delete("/users/alice/", headers=admin).status_code == 204
    assert client.get("/users/alice/", headers=admin).status_code == 404


def test_users_are_not_admins(backend: Backend) -> None:
    backend.add_user("carol", role=UserRole.USER)
    client, headers = backend.http(), backend.headers("carol")
    assert client.get("/users/", headers=headers).status_code == 200
    assert (
        client.post("/users/", json={"username": "x", "password": PASSWORD}, headers=headers).status_code
        == 403
    )
    assert client.delete("/users/admin/", headers=headers).status_code == 403
    assert client.post("/users/admin/reset_password/", headers=headers).status_code == 403
    assert client.get("/users-awaiting-approval/", headers=headers).status_code == 403


def test_password_change_and_reset(backend: Backend) -> None:
    backend.add_user("dave")
    client = backend.http()
    assert (
        client.put(
            "/users/admin/password/", json={"password": NEW_PASSWORD}, headers=backend.headers("dave")
        ).status_code
        == 403
    )
    changed = client.put(
        "/users/dave/password/", json={"password": NEW_PASSWORD}, headers=backend.headers("dave")
    )
    assert changed.status_code == 200
    assert (
        client.get("/me/", headers=backend.headers("dave")).status_code == 401
    )  # sessions end with the password
    login = client.post(
        "/api-token-auth/", data={"username": "dave", "password": NEW_PASSWORD}, headers=ACCEPT
    )
    assert login.status_code == 200
    token = client.post("/users/dave/reset_password/", headers=backend.headers()).json()[
        "reset_password_token"
    ]
    assert client.get(f"/users/dave/verify_token/?token={token}").status_code == 200
    assert client.get("/users/dave/verify_token/?token=nope").status_code == 401
    refused = client.post("/users/dave/set_password/", json={"token": "bad", "password": PASSWORD})
    assert refused.status_code == 401
    assert refused.json() == {"detail": "must provide a valid token to set a new password"}
    reset = client.post("/users/dave/set_password/", json={"token": token, "password": PASSWORD})
    assert reset.status_code == 200
    # The token is bound to the old password hash: it cannot be used twice.
    assert client.get(f"/users/dave/verify_token/?token={token}").status_code == 401
    assert (
        client.post(
            "/api-token-auth/", data={"username": "dave", "password": PASSWORD}, headers=ACCEPT
        ).status_code
        == 200
    )


def test_users_awaiting_approval(backend: Backend) -> None:
    backend.add_user("newcomer", channel=None)
    client, admin = backend.http(), backend.headers()
    assert client.get("/users-awaiting-approval/", headers=admin).json() == [
        {"username": "newcomer", "email": ""}
    ]
    approved = client.put("/users-awaiting-approval/?username=newcomer", json={"role": "USER"}, headers=admin)
    assert approved.status_code == 200 and approved.json()["channel"] == "mychannel"
    assert client.get("/me/", headers=backend.headers("newcomer")).status_code == 200
    backend.add_user("spam", channel=None)
    assert client.delete("/users-awaiting-approval/?username=spam", headers=admin).json() == {
        "detail": "User removed"
    }
    missing = client.delete("/users-awaiting-approval/?username=spam", headers=admin)
    assert missing.status_code == 404 and missing.json() == {"detail": "User not found"}
