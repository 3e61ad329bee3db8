"""Fixtures of the migrations tests: a database already at the latest schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from backend_common.db import make_engine
from backend_migrations import schema
from sqlalchemy import Engine


@pytest.fixture
def migrated_database_url(empty_database_url: str) -> str:
    schema.upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture
def engine(migrated_database_url: str) -> Iterator[Engine]:
    engine = make_engine(migrated_database_url, pool_size=1)
    yield engine
    engine.dispose()
