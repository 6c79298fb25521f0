"""What every route module shares: the application keys, the request's services and app
token, and the shapes of ids taken from paths and bodies.

Route modules import this module, never :mod:`gateway.http.app`, which imports them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field, StringConstraints

from devices.errors import NotFound
from devices.models import AppToken
from gateway.http.api import RouteSpec
from gateway.services import Services

SERVICES = web.AppKey("services", Services)
OPENAPI = web.AppKey("openapi", dict[str, Any])
ROUTES = web.AppKey("routes", list[RouteSpec])
APP_TOKEN = web.RequestKey("app_token", AppToken)

#: An account, device or subscription id in a body.
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
#: The platform's order id (printable ASCII).
OrderId = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")

_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]


def app_token_of(request: web.Request) -> AppToken:
    return request[APP_TOKEN]


def path_id(request: web.Request, name: str) -> str:
    """An id from the path; one that no record could have is simply not found."""
    value = request.match_info[name]
    if not _ID.fullmatch(value):
        raise NotFound(name, repr(value))
    return value
