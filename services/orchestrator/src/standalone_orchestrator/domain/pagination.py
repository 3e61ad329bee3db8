"""Offset pagination: the page token is the decimal offset ("" = 0), `page_size` 0 means 50."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from standalone_orchestrator.errors import unknown

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50


def parse(page_token: str, page_size: int) -> tuple[int, int]:
    """(offset, size); the store functions fetch size + 1 rows to know if a page follows."""
    if not page_token:
        offset = 0
    elif page_token.isdigit():
        offset = int(page_token)
    else:
        # The reference fails to parse the token and answers UNKNOWN.
        raise unknown(f'strconv.Atoi: parsing "{page_token}": invalid syntax')
    return offset, page_size or DEFAULT_PAGE_SIZE


def cut(rows: Sequence[T], offset: int, size: int) -> tuple[list[T], str]:
    """The page and the next page token ("" when it was the last page)."""
    if len(rows) > size:
        return list(rows[:size]), str(offset + size)
    return list(rows), ""
