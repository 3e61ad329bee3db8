"""The OpenAPI document of the API, generated from the route table (`/openapi.json`)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

_PATH_PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")
_PAGINATED = {
    "/compute_plan/": "Small (10)",
    "/performance/": "Large (1000)",
    "/task_profiling/": "Large (1000)",
}
_UNDOCUMENTED = {"/openapi.json", "/metrics", "/liveness", "/readiness"}


def _summary(route: Route) -> str:
    doc = inspect.getdoc(route.endpoint) or ""
    return doc.splitlines()[0] if doc else route.name.replace("_", " ")


def _operation(path: str, method: str, route: Route) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAMETER.findall(path)
    ]
    responses: dict[str, Any] = {
        "200": {"description": "Success", "content": {"application/json": {}}},
        "400": {"$ref": "#/components/responses/Error"},
        "401": {"$ref": "#/components/responses/Error"},
        "403": {"$ref": "#/components/responses/Error"},
        "404": {"$ref": "#/components/responses/Error"},
    }
    if method == "get" and not parameters and path not in ("/info/", "/organization/", "/me/"):
        parameters += [
            {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            {"name": "ordering", "in": "query", "schema": {"type": "string"}},
        ]
        responses["200"] = {
            "description": f"Page ({_PAGINATED.get(path, 'Default (100)')} items by default)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}},
        }
    if method == "post":
        responses["201"] = {"description": "Created", "content": {"application/json": {}}}
        responses["409"] = {"$ref": "#/components/responses/Error"}
    operation: dict[str, Any] = {
        "summary": _summary(route),
        "operationId": f"{method}_{route.name}_{abs(hash(path)) % 10_000}",
        "tags": [path.strip("/").split("/")[0] or "root"],
        "parameters": parameters,
        "responses": responses,
    }
    return operation


def _walk(routes: Sequence[BaseRoute], prefix: str = "") -> list[tuple[str, Route]]:
    found: list[tuple[str, Route]] = []
    for route in routes:
        if isinstance(route, Mount):
            found += _walk(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            found.append((prefix + route.path, route))
    return found


def document(routes: Sequence[BaseRoute], *, title: str, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, route in _walk(routes):
        if path in _UNDOCUMENTED:
            continue
        for method in sorted(route.methods or []):
            if method in ("HEAD", "OPTIONS"):
                continue
            paths.setdefault(path, {})[method.lower()] = _operation(path, method.lower(), route)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": "REST API of a Substra organization, compatible with the substra 1.0 SDK.",
        },
        "paths": paths,
        "security": [{"Token": []}, {"Basic": []}],
        "components": {
            "securitySchemes": {
                "Token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Token <key>",
                },
                "Basic": {"type": "http", "scheme": "basic"},
            },
            "schemas": {
                "Page": {
                    "type": "object",
                    "properties": {
                        "count": {"type": "integer"},
                        "next": {"type": "string", "nullable": True},
                        "previous": {"type": "string", "nullable": True},
                        "results": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "Error": {"type": "object", "properties": {"detail": {"type": "string"}}},
            },
            "responses": {
                "Error": {
                    "description": "Error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            },
        },
    }
