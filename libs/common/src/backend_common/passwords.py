"""Password and secret hashing with Argon2id (argon2-cffi), shared by migrations and the server."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher()


def hash_secret(secret: str) -> str:
    return str(_hasher().hash(secret))


def verify_secret(secret_hash: str, secret: str) -> bool:
    """True when `secret` matches; a malformed stored hash never matches."""
    try:
        return bool(_hasher().verify(secret_hash, secret))
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(secret_hash: str) -> bool:
    """True when the hash was made with weaker parameters than the current ones."""
    try:
        return bool(_hasher().check_needs_rehash(secret_hash))
    except InvalidHashError:
        return True
