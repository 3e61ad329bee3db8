"""`registry-prepopulate`: copy every configured image into the local registry, then exit.

Exit status: 0 when every image is in place, 1 when an image failed or the registry never
answered, 2 when the configuration is invalid. Every image is attempted even after a failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backend_common.logging import configure_logging, get_logger
from backend_common.registry.client import (
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryUnavailableError,
)
from backend_common.registry.reference import parse_image, resolve_remote
from backend_common.settings import LoggingSettings
from pydantic import ValidationError

from registry_prepopulate.copy import CopyReport, Destination, ImageSource, RegistrySource, copy_image
from registry_prepopulate.errors import PrepopulateError
from registry_prepopulate.layout import open_local_source
from registry_prepopulate.settings import (
    ConfigError,
    PrepopulateItem,
    PrepopulateSettings,
    docker_credentials,
    format_validation_error,
    load_items,
)

SERVICE = "registry-prepopulate"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

USER_AGENT = "registry-prepopulate"
_log = get_logger("registry_prepopulate")


def wait_for_registry(client: RegistryClient, attempts: int, interval_seconds: float) -> None:
    """Until `/v2/` answers; raises the last error after `attempts` tries (auth errors at once)."""
    for attempt in range(1, attempts + 1):
        try:
            client.ping()
        except RegistryAuthError:
            raise
        except RegistryError as exc:
            # No answer yet, or a 5xx while it starts: both are worth waiting for.
            retryable = isinstance(exc, RegistryUnavailableError) or (exc.status or 0) >= 500
            if not retryable or attempt == attempts:
                raise
            _log.info("waiting for the registry", registry=client.base_url, attempt=attempt, error=str(exc))
            time.sleep(interval_seconds)
        else:
            _log.info("registry answers", registry=client.base_url, attempts=attempt)
            return


def destination_for(item: PrepopulateItem, client: RegistryClient) -> Destination:
    """`<dstImage or image>` under the local registry, kept whole like kaniko's `--destination`."""
    target = parse_image(item.dst_image or item.image)
    # The image's own tag is the default; dstImage without a tag keeps the source's.
    return Destination(client, target.repository, target.tag)


@contextmanager
def open_source(item: PrepopulateItem, settings: PrepopulateSettings) -> Iterator[ImageSource]:
    if item.source_layout is not None:
        with open_local_source(item.source_layout, parse_image(item.image)) as local:
            yield local
        return
    host, image = resolve_remote(item.image, item.source_registry)
    credentials = docker_credentials(item.docker_config, host) if item.docker_config else None
    username, password = credentials if credentials else (None, None)
    with RegistryClient(
        host,
        scheme=item.source_scheme,
        username=username,
        password=password,
        timeout=settings.http_timeout_seconds,
        user_agent=USER_AGENT,
    ) as client:
        yield RegistrySource(client, image, settings.temp_dir)


def copy_item(
    item: PrepopulateItem, client: RegistryClient, settings: PrepopulateSettings, known_blobs: dict[str, str]
) -> CopyReport:
    if item.docker_config_secret_name and not item.docker_config:
        _log.warning(
            "dockerConfigSecretName names a Kubernetes secret and is ignored: "
            "set dockerConfig to its config.json",
            image=item.image,
        )
    with open_source(item, settings) as source:
        return copy_image(source, destination_for(item, client), known_blobs=known_blobs)


def run(settings: PrepopulateSettings, items: Sequence[PrepopulateItem]) -> list[tuple[str, str]]:
    """Copies every item; returns the (image, error) pairs of those that failed."""
    failures: list[tuple[str, str]] = []
    with RegistryClient(
        settings.registry,
        scheme=settings.registry_scheme,
        username=settings.registry_username,
        password=settings.password,
        timeout=settings.http_timeout_seconds,
        chunk_size=settings.upload_chunk_size,
        user_agent=USER_AGENT,
    ) as client:
        try:
            wait_for_registry(client, settings.wait_attempts, settings.wait_interval_seconds)
        except RegistryError as exc:
            return [("*", f"the destination registry {client.base_url} is not usable: {exc}")]
        known_blobs: dict[str, str] = {}  # digest → repository, for mounts between items
        for position, item in enumerate(items):
            log = _log.bind(item=position, image=item.image)
            started = time.monotonic()
            try:
                report = copy_item(item, client, settings, known_blobs)
            except PrepopulateError as exc:
                failures.append((item.image, str(exc)))
                log.error("image copy failed", error=str(exc))
                continue
            except Exception as exc:  # a bug must not hide the other images' outcome
                failures.append((item.image, f"{type(exc).__name__}: {exc}"))
                log.exception("image copy crashed")
                continue
            summary: dict[str, Any] = report.summary()
            event = "image already up to date" if report.up_to_date else "image copied"
            log.info(event, seconds=round(time.monotonic() - started, 3), **summary)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=SERVICE, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--config", type=Path, help="the YAML list of images (default: $REGISTRY_PREPOPULATE_CONFIG)"
    )
    args = parser.parse_args(argv)
    configure_logging(LoggingSettings(), service=SERVICE)
    # httpx logs every request at INFO; the copy's own events already say what was sent.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))

    try:
        overrides: dict[str, Any] = {"config_path": args.config} if args.config else {}
        settings = PrepopulateSettings(**overrides)
        items = load_items(settings.config_path)
    except ValidationError as exc:
        return _fail(EXIT_CONFIG, f"invalid settings: {format_validation_error(exc)}")
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))

    if not items:
        _log.info("nothing to prepopulate", config=str(settings.config_path))
        return EXIT_OK
    _log.info("prepopulating", registry=settings.registry, images=len(items))
    failures = run(settings, items)
    if failures:
        details = "; ".join(f"{image}: {error}" for image, error in failures)
        return _fail(EXIT_FAILED, f"{len(failures)} of {len(items)} image(s) not copied: {details}")
    _log.info("prepopulation done", images=len(items))
    return EXIT_OK


def _fail(status: int, message: str) -> int:
    # The log line is for collectors; stderr is for whoever reads the job's output.
    _log.error("registry-prepopulate failed", error=message, exit_status=status)
    print(f"{SERVICE}: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
