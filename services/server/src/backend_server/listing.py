"""Query parameters of list routes: filters, ordering and page-number pagination (`rest-api.md` 1.4, 1.5).

The SDK re-sends its filters when following `next`, so a parameter may appear several times; the
last occurrence wins, as with Django's `QueryDict.get`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, String, and_, cast, or_
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import UnaryExpression
from starlette.datastructures import QueryParams

from backend_server.errors import ApiError

DEFAULT_PAGE_SIZE = 100
SMALL_PAGE_SIZE = 10
LARGE_PAGE_SIZE = 1000

Column = ColumnElement[Any] | InstrumentedAttribute[Any]

_TERMS = re.compile(r"[\s,]+")


def validation_error(field: str, message: str) -> ApiError:
    """DRF's field-keyed body, plus a `detail` the SDK shows as the exception message."""
    return ApiError(400, f"{field}: {message}", extra={field: [message]})


def parse_uuid(value: str, field: str = "key") -> str:
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise validation_error(field, f"“{value}” is not a valid UUID.") from None


def parse_datetime(value: str, field: str) -> datetime:
    text = value.strip().replace(" ", "+") if "T" in value else value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise validation_error(field, "Enter a valid date/time.") from None


class Params:
    """Read access to the query string with the conventions of the reference's filters."""

    def __init__(self, query: QueryParams) -> None:
        self.query = query

    def get(self, name: str) -> str | None:
        values = self.query.getlist(name)
        return values[-1] if values else None

    def csv(self, name: str) -> list[str] | None:
        """A comma-separated "in" filter; None when absent or empty (no filtering)."""
        value = self.get(name)
        if value is None:
            return None
        items = [item.strip() for item in value.split(",") if item.strip()]
        return items or None

    def keys(self, name: str) -> list[str] | None:
        items = self.csv(name)
        return None if items is None else [parse_uuid(item, name) for item in items]

    def key(self, name: str) -> str | None:
        value = self.get(name)
        return parse_uuid(value, name) if value and value.strip() else None

    def integers(self, name: str) -> list[int] | None:
        items = self.csv(name)
        if items is None:
            return None
        try:
            return [int(item) for item in items]
        except ValueError:
            raise validation_error(name, "Enter a whole number.") from None

    def datetime(self, name: str) -> datetime | None:
        value = self.get(name)
        return parse_datetime(value, name) if value and value.strip() else None

    def number(self, name: str) -> float | None:
        value = self.get(name)
        if value is None or not value.strip():
            return None
        try:
            return float(value)
        except ValueError:
            raise validation_error(name, "Enter a number.") from None

    def flag(self, name: str) -> bool:
        return (self.get(name) or "").strip().lower() in {"true", "1", "yes"}


# --- filter building blocks -------------------------------------------------------------------------


def in_filter(column: Column, values: Sequence[object] | None) -> ColumnElement[bool] | None:
    if values is None:
        return None
    return column.in_(list(values))


def date_range(
    column: ColumnElement[datetime]
    | InstrumentedAttribute[datetime]
    | InstrumentedAttribute[datetime | None],
    params: Params,
    name: str,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    after = params.datetime(f"{name}_after")
    before = params.datetime(f"{name}_before")
    if after is not None:
        conditions.append(column >= after)
    if before is not None:
        conditions.append(column <= before)
    return conditions


def match_filter(params: Params, fields: Sequence[Column]) -> ColumnElement[bool] | None:
    """`match`: every term (whitespace/comma separated) is contained in one of the fields."""
    value = params.get("match")
    if not value or not value.strip():
        return None
    terms = [term for term in _TERMS.split(value.strip()) if term]
    return and_(
        *(
            or_(*(cast(field, String).ilike(f"%{_escape_like(term)}%", escape="\\") for field in fields))
            for term in terms
        )
    )


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def metadata_filter(
    params: Params, column: InstrumentedAttribute[dict[str, str]]
) -> list[ColumnElement[bool]]:
    """`metadata=[{"key", "type": is|contains|exists, "value"}]`, ANDed; malformed JSON is ignored."""
    raw = params.get("metadata")
    if not raw:
        return []
    try:
        conditions = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(conditions, list):
        return []
    document = cast(column, JSONB)
    result: list[ColumnElement[bool]] = []
    for condition in conditions:
        if not isinstance(condition, dict) or not isinstance(condition.get("key"), str):
            continue
        key, kind, value = condition["key"], condition.get("type"), condition.get("value")
        if kind == "exists":
            result.append(document.has_key(key))
        elif kind == "is" and value is not None:
            result.append(document[key].astext == str(value))
        elif kind == "contains" and value is not None:
            result.append(document[key].astext.ilike(f"%{_escape_like(str(value))}%", escape="\\"))
    return result


def permission_filter(
    params: Params,
    name: str,
    public: InstrumentedAttribute[bool],
    authorized_ids: InstrumentedAttribute[list[str]],
) -> ColumnElement[bool] | None:
    """Assets that are public or authorize **all** the given organizations."""
    organizations = params.csv(name)
    if organizations is None:
        return None
    return or_(public.is_(True), authorized_ids.op("@>")(cast(organizations, ARRAY(String))))


def collect(
    *conditions: ColumnElement[bool] | Iterable[ColumnElement[bool]] | None,
) -> list[ColumnElement[bool]]:
    result: list[ColumnElement[bool]] = []
    for condition in conditions:
        if condition is None:
            continue
        if isinstance(condition, ColumnElement):
            result.append(condition)
        else:
            result.extend(condition)
    return result


# --- ordering ------------------------------------------------------------------------------------------

OrderingMap = Mapping[str, Callable[[], Column]]


def ordering(
    params: Params,
    allowed: OrderingMap,
    default: Sequence[str],
    tiebreaker: Column | None = None,
) -> list[UnaryExpression[Any]]:
    """`ordering=a,-b`; unknown fields are dropped; the tiebreaker makes pages stable."""
    requested = params.csv("ordering") or []
    fields = [field for field in requested if field.lstrip("-") in allowed or _metadata_field(field, allowed)]
    if not fields:
        fields = list(default)
    clauses: list[UnaryExpression[Any]] = []
    for field in fields:
        name = field.lstrip("-")
        expression = allowed[name]() if name in allowed else allowed["metadata__"]().op("->>")(name[10:])
        # PostgreSQL's default null placement (as Django's) so that the indexes serve the order.
        clauses.append(expression.desc() if field.startswith("-") else expression.asc())
    if tiebreaker is not None:
        # Same direction as the last field: `(creation_date, key)` indexes are then scanned backwards.
        clauses.append(tiebreaker.desc() if fields[-1].startswith("-") else tiebreaker.asc())
    return clauses


def _metadata_field(field: str, allowed: OrderingMap) -> bool:
    return (
        "metadata__" in allowed and field.lstrip("-").startswith("metadata__") and len(field.lstrip("-")) > 10
    )


# --- pagination ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageRequest:
    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


def invalid_page() -> ApiError:
    return ApiError(404, "Invalid page.")


def page_request(params: Params, default_size: int, max_size: int) -> PageRequest:
    size = default_size
    raw_size = params.get("page_size")
    if raw_size is not None:
        try:
            requested = int(raw_size)
        except ValueError:
            requested = 0
        if requested > 0:
            size = min(requested, max_size)
    raw_page = params.get("page")
    if raw_page is None or raw_page == "":
        return PageRequest(1, size)
    try:
        number = int(raw_page)
    except ValueError:
        raise invalid_page() from None
    if number < 1:
        raise invalid_page()
    return PageRequest(number, size)


def check_page(page: PageRequest, count: int) -> None:
    """DRF answers 404 for a page past the end (the first page always exists)."""
    if page.number > 1 and page.offset >= count:
        raise invalid_page()


def page_url(url: str, query: QueryParams, number: int | None) -> str:
    """`url` with the query string kept (duplicates collapsed) and `page` replaced or removed."""
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for pair in query.multi_items():
        if pair[0] == "page" or pair in seen:
            continue
        seen.add(pair)
        pairs.append(pair)
    if number is not None:
        pairs.append(("page", str(number)))
    return f"{url}?{urlencode(pairs)}" if pairs else url


def envelope(count: int, page: PageRequest, url: str, query: QueryParams, results_json: str) -> str:
    """The page-number pagination body, with the already-serialized results spliced in."""
    has_next = page.offset + page.size < count
    next_url = page_url(url, query, page.number + 1) if has_next else None
    if page.number <= 1:
        previous_url = None
    else:
        previous_url = page_url(url, query, page.number - 1 if page.number > 2 else None)
    return (
        f'{{"count":{count},"next":{json.dumps(next_url)},"previous":{json.dumps(previous_url)},'
        f'"results":{results_json}}}'
    )
