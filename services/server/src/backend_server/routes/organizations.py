"""`/organization/`: the channel's organizations, as a bare list."""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend_server import render
from backend_server.authentication import Caller, authenticated_read
from backend_server.data import organizations
from backend_server.http import json_response
from backend_server.state import server_state


def list_organizations(session: Session, request: Request, caller: Caller) -> Response:
    own_id = server_state(request).settings.msp_id
    rows = organizations.channel_organizations(session, caller.channel)
    return json_response([render.organization(row, own_id) for row in rows])


routes = [Route("/organization/", authenticated_read(list_organizations), methods=["GET"])]
