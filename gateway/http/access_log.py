"""The HTTP access log, with secrets left out (issue 14, item 7).

Query values named ``token``, ``sig``, ``session`` or ``password`` (app tokens, the
filesystem store's presigned signatures, playback sessions, device passwords) are written
as ``***``; headers are never written.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

#: Query parameters whose values are secrets.
SECRET_PARAMS = frozenset({"token", "sig", "session", "password"})


def redact(path_qs: str) -> str:
    """``path_qs`` with every secret query value replaced by ``***``."""
    path, sep, query = path_qs.partition("?")
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    safe = [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in pairs]
    return f"{path}?{urlencode(safe, safe='*:/')}"


class RedactingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %.3fs',
            request.remote,
            request.method,
            redact(request.path_qs),
            response.status,
            time,
        )
