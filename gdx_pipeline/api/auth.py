"""Bearer-token authentication for the endpoints that change something.

With `GDX_API_TOKEN` set, a mutating request needs `Authorization: Bearer <token>`; the token
is compared in constant time so response timing says nothing about how much of a guess was
right. Without a token the server only listens on loopback (see `server.py`).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gdx_pipeline.api.errors import Unauthorized

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="Required on every endpoint that writes, when the server runs with GDX_API_TOKEN set.",
)


def token_matches(supplied: str, expected: str) -> bool:
    return hmac.compare_digest(supplied.encode("utf-8"), expected.encode("utf-8"))


async def require_token(  # async: no thread hop for a string comparison
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> None:
    expected = request.app.state.settings.token
    if expected is None:
        return
    if credentials is None:
        raise Unauthorized("this endpoint needs an 'Authorization: Bearer <token>' header (the server's GDX_API_TOKEN)")
    if not token_matches(credentials.credentials, expected):
        raise Unauthorized("the bearer token is not valid")


WriteAccess = Depends(require_token)
