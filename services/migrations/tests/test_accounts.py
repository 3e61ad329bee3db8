"""Account creation from the files of `/accounts`, against the real Postgres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from backend_common.db import make_session_factory, session_scope
from backend_common.db.local import IncomingOrganization, OutgoingOrganization, User, UserRole
from backend_common.passwords import verify_secret
from backend_migrations.accounts import AccountFileError, AccountFiles, SyncReport, sync_accounts
from sqlalchemy import Engine, select

CHANNELS = ["mychannel", "yourchannel"]


def write_accounts(directory: Path, users: str = "", incoming: str = "", outgoing: str = "") -> AccountFiles:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "users").write_text(users)
    (directory / "incoming_organizations").write_text(incoming)
    (directory / "outgoing_organizations").write_text(outgoing)
    return AccountFiles.from_directory(directory)


def sync(engine: Engine, files: AccountFiles) -> SyncReport:
    with session_scope(make_session_factory(engine)) as session:
        return sync_accounts(session, files, CHANNELS)


def accounts_state(engine: Engine) -> dict[str, object]:
    with session_scope(make_session_factory(engine)) as session:
        return {
            "users": sorted(
                (u.username, u.password_hash, u.channel, u.role.value) for u in session.scalars(select(User))
            ),
            "incoming": sorted(
                (o.organization_id, o.secret_hash) for o in session.scalars(select(IncomingOrganization))
            ),
            "outgoing": sorted(
                (o.organization_id, o.secret) for o in session.scalars(select(OutgoingOrganization))
            ),
        }


VALID_USERS = "org-1 p@sswr0d44 mychannel\nalice s3cret-Passw0rd yourchannel\n"
VALID_INCOMING = "MyOrg1MSP selfSecret1\nMyOrg2MSP peerSecret2\n"
VALID_OUTGOING = "MyOrg1MSP selfSecret1\nMyOrg2MSP otherSecret3\n"


def test_accounts_are_created_with_hashed_secrets(engine: Engine, tmp_path: Path) -> None:
    report = sync(engine, write_accounts(tmp_path, VALID_USERS, VALID_INCOMING, VALID_OUTGOING))

    assert report.users is not None and sorted(report.users.created) == ["alice", "org-1"]
    with session_scope(make_session_factory(engine)) as session:
        users = {u.username: u for u in session.scalars(select(User))}
        assert users["org-1"].channel == "mychannel"
        assert users["alice"].channel == "yourchannel"
        assert all(u.role is UserRole.ADMIN for u in users.values())
        assert users["org-1"].password_hash.startswith("$argon2id$")
        assert "p@sswr0d44" not in users["org-1"].password_hash
        assert verify_secret(users["org-1"].password_hash, "p@sswr0d44")
        assert not verify_secret(users["org-1"].password_hash, "wrong")

        incoming = {o.organization_id: o.secret_hash for o in session.scalars(select(IncomingOrganization))}
        assert set(incoming) == {"MyOrg1MSP", "MyOrg2MSP"}
        assert verify_secret(incoming["MyOrg2MSP"], "peerSecret2")
        assert "peerSecret2" not in incoming["MyOrg2MSP"]

        outgoing = {o.organization_id: o.secret for o in session.scalars(select(OutgoingOrganization))}
        assert outgoing == {"MyOrg1MSP": "selfSecret1", "MyOrg2MSP": "otherSecret3"}


def test_second_run_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    files = write_accounts(tmp_path, VALID_USERS, VALID_INCOMING, VALID_OUTGOING)
    assert sync(engine, files).changed
    before = accounts_state(engine)

    report = sync(engine, files)

    assert not report.changed
    assert report.users is not None and sorted(report.users.unchanged) == ["alice", "org-1"]
    assert accounts_state(engine) == before


def test_entries_are_updated_and_absent_ones_removed(engine: Engine, tmp_path: Path) -> None:
    sync(engine, write_accounts(tmp_path / "v1", VALID_USERS, VALID_INCOMING, VALID_OUTGOING))

    report = sync(
        engine,
        write_accounts(
            tmp_path / "v2",
            users="org-1 n3w-passw0rd yourchannel\n",
            incoming="MyOrg1MSP rotatedSecret\n",
            outgoing="MyOrg1MSP selfSecret1\nMyOrg3MSP thirdSecret\n",
        ),
    )

    assert report.users is not None
    assert report.users.updated == ["org-1"] and report.users.deleted == ["alice"]
    assert report.incoming_organizations is not None
    assert report.incoming_organizations.updated == ["MyOrg1MSP"]
    assert report.incoming_organizations.deleted == ["MyOrg2MSP"]
    assert report.outgoing_organizations is not None
    assert report.outgoing_organizations.created == ["MyOrg3MSP"]
    assert report.outgoing_organizations.deleted == ["MyOrg2MSP"]
    with session_scope(make_session_factory(engine)) as session:
        user = session.scalars(select(User)).one()
        assert (user.username, user.channel) == ("org-1", "yourchannel")
        assert verify_secret(user.password_hash, "n3w-passw0rd")
        incoming = session.scalars(select(IncomingOrganization)).one()
        assert verify_secret(incoming.secret_hash, "rotatedSecret")


def test_oidc_users_are_never_removed_by_the_file(engine: Engine, tmp_path: Path) -> None:
    sync(engine, write_accounts(tmp_path / "v1", VALID_USERS))
    with session_scope(make_session_factory(engine)) as session:
        session.scalars(select(User).where(User.username == "alice")).one().is_external = True

    sync(engine, write_accounts(tmp_path / "v2", "org-1 p@sswr0d44 mychannel\n"))

    assert [u[0] for u in accounts_state(engine)["users"]] == ["alice", "org-1"]  # type: ignore[index]


def test_missing_files_leave_their_accounts_untouched(engine: Engine, tmp_path: Path) -> None:
    sync(engine, write_accounts(tmp_path / "v1", VALID_USERS, VALID_INCOMING, VALID_OUTGOING))
    before = accounts_state(engine)
    only_users = tmp_path / "v2"
    only_users.mkdir()
    (only_users / "users").write_text(VALID_USERS)

    report = sync(engine, AccountFiles.from_directory(only_users))

    assert report.incoming_organizations is None and report.outgoing_organizations is None
    assert accounts_state(engine) == before


@pytest.mark.parametrize(
    ("file_name", "content", "line", "message"),
    [
        (
            "users",
            "org-1 p@sswr0d44 mychannel\nbob onlytwo\n",
            2,
            "expected '<username> <password> <channel>'",
        ),
        ("users", "org-1 p@sswr0d44 mychannel\n\nbob pw nochannel\n", 3, "unknown channel 'nochannel'"),
        ("users", "org-1 p@sswr0d44 mychannel\norg-1 other mychannel\n", 2, "duplicate username 'org-1'"),
        ("users", "bad/name pw mychannel\n", 1, "invalid username"),
        ("incoming_organizations", "MyOrg1MSP a\nMyOrg1MSP b\n", 2, "duplicate organization 'MyOrg1MSP'"),
        ("incoming_organizations", "MyOrg1MSP\n", 1, "expected '<organization id> <secret>'"),
        ("outgoing_organizations", "MyOrg1MSP a b\n", 1, "expected '<organization id> <secret>'"),
    ],
)
def test_bad_files_are_rejected_and_change_nothing(
    engine: Engine, tmp_path: Path, file_name: str, content: str, line: int, message: str
) -> None:
    sync(engine, write_accounts(tmp_path / "good", VALID_USERS, VALID_INCOMING, VALID_OUTGOING))
    before = accounts_state(engine)
    # The other files are valid and would change things: the error must roll them back too.
    files = write_accounts(
        tmp_path / "bad", "newuser p@ssw0rd-x mychannel\n", "MyOrg9MSP x\n", "MyOrg9MSP y\n"
    )
    (tmp_path / "bad" / file_name).write_text(content)

    with pytest.raises(AccountFileError) as raised:
        sync(engine, files)

    assert str(raised.value).startswith(f"{tmp_path / 'bad' / file_name}:{line}: ")
    assert message in str(raised.value)
    assert accounts_state(engine) == before


def test_unreadable_file_is_rejected(engine: Engine, tmp_path: Path) -> None:
    files = write_accounts(tmp_path, VALID_USERS, VALID_INCOMING, VALID_OUTGOING)
    (tmp_path / "outgoing_organizations").write_bytes(b"MyOrg1MSP \xff\xfe\n")

    with pytest.raises(AccountFileError, match="outgoing_organizations: cannot read file"):
        sync(engine, files)

    assert accounts_state(engine) == {"users": [], "incoming": [], "outgoing": []}


def _cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    executable = os.path.join(os.path.dirname(sys.executable), "backend-migrations")
    environment = {**os.environ, "CHANNELS": '[{"mychannel": {}}, {"yourchannel": {}}]'}
    return subprocess.run(
        [executable, *arguments], capture_output=True, text=True, timeout=120, check=False, env=environment
    )


def test_run_command_migrates_and_creates_accounts(empty_database_url: str, tmp_path: Path) -> None:
    write_accounts(tmp_path, VALID_USERS, VALID_INCOMING, VALID_OUTGOING)

    first = _cli("--database-url", empty_database_url, "run", "--accounts-dir", str(tmp_path))
    second = _cli("--database-url", empty_database_url, "run", "--accounts-dir", str(tmp_path))

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    first_report = [
        json.loads(line) for line in first.stdout.splitlines() if '"accounts synchronised"' in line
    ]
    second_report = [
        json.loads(line) for line in second.stdout.splitlines() if '"accounts synchronised"' in line
    ]
    assert sorted({r["kind"]: r["created"] for r in first_report}["users"]) == ["alice", "org-1"]
    assert all(not r["created"] and not r["updated"] and not r["deleted"] for r in second_report)
    assert len(second_report) == 3


def test_cli_reports_bad_file_with_location(migrated_database_url: str, tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("org-1 p@sswr0d44 mychannel\nbob pw elsewhere\n")

    result = _cli("--database-url", migrated_database_url, "accounts", "--users", str(users))

    assert result.returncode == 2
    assert f"{users}:2: unknown channel 'elsewhere'" in result.stderr
