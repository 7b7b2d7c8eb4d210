"""Request bodies capped in bytes, before anything parses them.

A declared `Content-Length` over the cap is refused at once, without reading the body; a
streamed (chunked) body is counted as it arrives and refused as soon as it passes the cap, so
no request can make the server buffer more than the cap.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gdx_pipeline.api.errors import BadRequest, PayloadTooLarge, answer


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def too_large_message(self) -> str:
        return f"request body is larger than {self.max_bytes:,} bytes; send fewer rows per request"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await answer(BadRequest("Content-Length is not a number"))(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await answer(PayloadTooLarge(self.too_large_message()))(scope, receive, send)
                return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self.too_large_message())
            return message

        await self.app(scope, counted_receive, send)
