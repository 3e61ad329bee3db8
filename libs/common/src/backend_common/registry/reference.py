"""Image references (`[domain/]path[:tag][@digest]`), following the Docker reference grammar."""

from __future__ import annotations

import re
from dataclasses import dataclass

from backend_common.registry.errors import ImageError
from backend_common.registry.oci import is_digest

DEFAULT_TAG = "latest"
DOCKER_HUB_DOMAIN = "docker.io"
# `docker.io` is a name, not the API host; the Docker CLI maps it the same way.
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")


class ImageReferenceError(ImageError):
    pass


@dataclass(frozen=True)
class ImageReference:
    """A repository path with an optional tag and digest (no registry domain)."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What to ask a registry for: the digest wins, then the tag, then `latest`."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image(text: str) -> ImageReference:
    """`path[:tag][@digest]`; a leading domain, if any, stays part of the path."""
    value = text.strip()
    name, _, digest = value.partition("@")
    if digest and not is_digest(digest):
        raise ImageReferenceError(f"invalid digest in image reference {text!r}")
    tag: str | None = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:  # a colon before the last slash is a registry port, not a tag
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise ImageReferenceError(f"invalid tag {tag!r} in image reference {text!r}")
    if not name or not _PATH_RE.match(_strip_domain_for_check(name)):
        raise ImageReferenceError(
            f"invalid image reference {text!r}: expected lowercase path components such as "
            "`substra/substra-tools:0.20.0`"
        )
    return ImageReference(repository=name, tag=tag, digest=digest or None)


def _strip_domain_for_check(name: str) -> str:
    domain, path = split_domain(name)
    return path if domain else name


def split_domain(name: str) -> tuple[str | None, str]:
    """(domain, path) when the first component looks like a host (has `.` or `:`, or is localhost)."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return None, name


def resolve_remote(image: str, source_registry: str | None) -> tuple[str, ImageReference]:
    """(registry host, reference inside it) of `FROM [<sourceRegistry>/]<image>`, as the reference does."""
    parsed = parse_image(f"{source_registry.strip('/')}/{image}" if source_registry else image)
    domain, path = split_domain(parsed.repository)
    if source_registry and domain is None:
        # `sourceRegistry` names a registry even when it is a bare host such as `registry`.
        domain, _, path = parsed.repository.partition("/")
    domain = domain or DOCKER_HUB_DOMAIN
    if domain in _DOCKER_HUB_ALIASES and "/" not in path:
        path = f"library/{path}"  # official images live under library/ on Docker Hub
    return domain, ImageReference(repository=path, tag=parsed.tag, digest=parsed.digest)


def api_host(domain: str) -> str:
    return DOCKER_HUB_API_HOST if domain in _DOCKER_HUB_ALIASES else domain


def tag_from_ref_name(ref_name: str) -> str | None:
    """The tag of an `org.opencontainers.image.ref.name` annotation (a bare tag or a full name)."""
    name, at, _ = ref_name.partition("@")
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        candidate = name[colon + 1 :]
    elif at or "/" in name:
        return None  # a name without a tag
    else:
        candidate = name  # a bare ref.name is the tag itself
    return candidate if _TAG_RE.match(candidate) else None
