"""Account creation from the files mounted at `/accounts` (`operations.md`, section 3).

Three files, one entry per line, fields separated by spaces:

* `users`: `<username> <password> <channel>`: created as ADMIN, or password and channel updated;
  users absent from the file are deleted (except OIDC users);
* `incoming_organizations`: `<org id> <secret>`: peers allowed to call this backend; stored hashed;
* `outgoing_organizations`: `<org id> <secret>`: credentials presented to peers; stored in clear.

Every file is read and validated before the database is touched, and the caller applies the whole
synchronisation in one transaction, so a bad file changes nothing. A second run with the same files
changes nothing: a stored hash that still verifies its secret is kept.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backend_common.db.base import ORGANIZATION_ID_LENGTH
from backend_common.db.local import IncomingOrganization, OutgoingOrganization, User, UserRole
from backend_common.passwords import hash_secret, needs_rehash, verify_secret
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

USERS_FILE = "users"
INCOMING_ORGANIZATIONS_FILE = "incoming_organizations"
OUTGOING_ORGANIZATIONS_FILE = "outgoing_organizations"

# Django's username rule, which the reference and its clients follow.
_USERNAME = re.compile(r"^[\w.@+-]{1,150}$")
_ORGANIZATION_ID = re.compile(rf"^[\w.@+-]{{1,{ORGANIZATION_ID_LENGTH}}}$")


class AccountFileError(ValueError):
    """A bad accounts file: names the file and, when it applies, the line."""

    def __init__(self, path: Path, message: str, line_number: int | None = None) -> None:
        location = f"{path}:{line_number}" if line_number is not None else str(path)
        super().__init__(f"{location}: {message}")
        self.path = path
        self.line_number = line_number


@dataclass(frozen=True)
class UserEntry:
    username: str
    password: str
    channel: str


@dataclass(frozen=True)
class OrganizationEntry:
    organization_id: str
    secret: str


@dataclass(frozen=True)
class AccountFiles:
    """Which files to synchronise; `None` leaves that kind of account untouched."""

    users: Path | None = None
    incoming_organizations: Path | None = None
    outgoing_organizations: Path | None = None

    @classmethod
    def from_directory(cls, directory: Path) -> AccountFiles:
        """The files present in `directory` (as mounted from the chart's Secret)."""
        if not directory.is_dir():
            raise AccountFileError(directory, "not a readable directory")

        def present(name: str) -> Path | None:
            path = directory / name
            return path if path.exists() else None

        return cls(
            users=present(USERS_FILE),
            incoming_organizations=present(INCOMING_ORGANIZATIONS_FILE),
            outgoing_organizations=present(OUTGOING_ORGANIZATIONS_FILE),
        )


@dataclass
class SyncCounts:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


@dataclass
class SyncReport:
    users: SyncCounts | None = None
    incoming_organizations: SyncCounts | None = None
    outgoing_organizations: SyncCounts | None = None

    @property
    def changed(self) -> bool:
        return any(
            counts is not None and (counts.created or counts.updated or counts.deleted)
            for counts in (self.users, self.incoming_organizations, self.outgoing_organizations)
        )


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Non-blank, non-comment lines split into fields, with their 1-based numbers."""
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AccountFileError(path, f"cannot read file: {error}") from error
    for number, raw in enumerate(content.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line.split()


def read_users(path: Path, known_channels: Collection[str]) -> list[UserEntry]:
    entries: list[UserEntry] = []
    seen: dict[str, int] = {}
    for number, fields in _lines(path):
        if len(fields) != 3:
            raise AccountFileError(
                path, f"expected '<username> <password> <channel>', got {len(fields)} field(s)", number
            )
        username, password, channel = fields
        if not _USERNAME.match(username):
            raise AccountFileError(
                path, f"invalid username {username!r}: up to 150 letters, digits and @.+-_", number
            )
        if username in seen:
            raise AccountFileError(
                path, f"duplicate username {username!r} (first on line {seen[username]})", number
            )
        if channel not in known_channels:
            known = ", ".join(sorted(known_channels)) or "none configured"
            raise AccountFileError(path, f"unknown channel {channel!r} (known: {known})", number)
        seen[username] = number
        entries.append(UserEntry(username=username, password=password, channel=channel))
    return entries


def read_organizations(path: Path) -> list[OrganizationEntry]:
    entries: list[OrganizationEntry] = []
    seen: dict[str, int] = {}
    for number, fields in _lines(path):
        if len(fields) != 2:
            raise AccountFileError(
                path, f"expected '<organization id> <secret>', got {len(fields)} field(s)", number
            )
        organization_id, secret = fields
        if not _ORGANIZATION_ID.match(organization_id):
            raise AccountFileError(path, f"invalid organization id {organization_id!r}", number)
        if organization_id in seen:
            raise AccountFileError(
                path,
                f"duplicate organization {organization_id!r} (first on line {seen[organization_id]})",
                number,
            )
        seen[organization_id] = number
        entries.append(OrganizationEntry(organization_id=organization_id, secret=secret))
    return entries


def _matches(stored_hash: str, secret: str) -> bool:
    return verify_secret(stored_hash, secret) and not needs_rehash(stored_hash)


def sync_users(session: Session, entries: list[UserEntry], *, keep_absent: bool = False) -> SyncCounts:
    counts = SyncCounts()
    existing = {user.username: user for user in session.scalars(select(User))}
    for entry in entries:
        user = existing.get(entry.username)
        if user is None:
            session.add(
                User(
                    username=entry.username,
                    password_hash=hash_secret(entry.password),
                    channel=entry.channel,
                    role=UserRole.ADMIN,
                    created_at=datetime.now(UTC),
                )
            )
            counts.created.append(entry.username)
            continue
        changed = False
        if not _matches(user.password_hash, entry.password):
            user.password_hash = hash_secret(entry.password)
            changed = True
        if user.channel != entry.channel:
            user.channel = entry.channel
            changed = True
        (counts.updated if changed else counts.unchanged).append(entry.username)
    if not keep_absent:
        listed = {entry.username for entry in entries}
        for username, user in existing.items():
            if username not in listed and not user.is_external:
                session.delete(user)
                counts.deleted.append(username)
    return counts


def sync_incoming_organizations(session: Session, entries: list[OrganizationEntry]) -> SyncCounts:
    counts = SyncCounts()
    existing = {row.organization_id: row for row in session.scalars(select(IncomingOrganization))}
    for entry in entries:
        row = existing.get(entry.organization_id)
        if row is None:
            session.add(
                IncomingOrganization(
                    organization_id=entry.organization_id, secret_hash=hash_secret(entry.secret)
                )
            )
            counts.created.append(entry.organization_id)
        elif _matches(row.secret_hash, entry.secret):
            counts.unchanged.append(entry.organization_id)
        else:
            row.secret_hash = hash_secret(entry.secret)
            counts.updated.append(entry.organization_id)
    counts.deleted = sorted(set(existing) - {entry.organization_id for entry in entries})
    if counts.deleted:
        session.execute(
            delete(IncomingOrganization).where(IncomingOrganization.organization_id.in_(counts.deleted))
        )
    return counts


def sync_outgoing_organizations(session: Session, entries: list[OrganizationEntry]) -> SyncCounts:
    counts = SyncCounts()
    existing = {row.organization_id: row for row in session.scalars(select(OutgoingOrganization))}
    for entry in entries:
        row = existing.get(entry.organization_id)
        if row is None:
            session.add(OutgoingOrganization(organization_id=entry.organization_id, secret=entry.secret))
            counts.created.append(entry.organization_id)
        elif row.secret == entry.secret:
            counts.unchanged.append(entry.organization_id)
        else:
            row.secret = entry.secret
            counts.updated.append(entry.organization_id)
    counts.deleted = sorted(set(existing) - {entry.organization_id for entry in entries})
    if counts.deleted:
        session.execute(
            delete(OutgoingOrganization).where(OutgoingOrganization.organization_id.in_(counts.deleted))
        )
    return counts


def sync_accounts(
    session: Session, files: AccountFiles, known_channels: Collection[str], *, oidc_enabled: bool = False
) -> SyncReport:
    """Validate every file, then apply them in `session` (the caller commits or rolls back)."""
    users = read_users(files.users, known_channels) if files.users else None
    incoming = read_organizations(files.incoming_organizations) if files.incoming_organizations else None
    outgoing = read_organizations(files.outgoing_organizations) if files.outgoing_organizations else None

    report = SyncReport()
    if users is not None:
        # With OIDC, people sign up through the provider: the file must not delete them.
        report.users = sync_users(session, users, keep_absent=oidc_enabled)
    if incoming is not None:
        report.incoming_organizations = sync_incoming_organizations(session, incoming)
    if outgoing is not None:
        report.outgoing_organizations = sync_outgoing_organizations(session, outgoing)
    session.flush()
    return report
