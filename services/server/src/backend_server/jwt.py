"""HS256 JSON Web Tokens, enough for the frontend cookies and password-reset links.

Only HS256 is produced and accepted (the algorithm in the header is checked, never trusted).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

_HEADER = {"alg": "HS256", "typ": "JWT"}


class InvalidTokenError(Exception):
    """Malformed, badly signed or expired token; the message says which."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (ValueError, TypeError) as error:
        raise InvalidTokenError("invalid base64 segment") from error


def _sign(signing_input: bytes, key: str) -> str:
    return _b64encode(hmac.new(key.encode(), signing_input, hashlib.sha256).digest())


def encode(payload: Mapping[str, Any], key: str) -> str:
    header = _b64encode(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = _b64encode(json.dumps(dict(payload), separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode("ascii")
    return f"{header}.{body}.{_sign(signing_input, key)}"


def decode(token: str, key: str, *, now: float | None = None) -> dict[str, Any]:
    """The payload of a valid token; `exp` (when present) must be in the future."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidTokenError("not enough segments")
    header_segment, payload_segment, signature = parts
    try:
        header = json.loads(_b64decode(header_segment))
        payload = json.loads(_b64decode(payload_segment))
    except ValueError as error:
        raise InvalidTokenError("invalid JSON segment") from error
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise InvalidTokenError("unsupported algorithm")
    expected = _sign(f"{header_segment}.{payload_segment}".encode("ascii"), key)
    if not hmac.compare_digest(expected, signature):
        raise InvalidTokenError("signature verification failed")
    if not isinstance(payload, dict):
        raise InvalidTokenError("payload is not an object")
    expiry = payload.get("exp")
    if expiry is not None:
        if not isinstance(expiry, int | float):
            raise InvalidTokenError("invalid exp claim")
        if (now if now is not None else time.time()) >= expiry:
            raise InvalidTokenError("signature has expired")
    return payload
