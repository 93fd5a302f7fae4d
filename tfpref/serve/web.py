"""What every router of the server shares: JSON responses, errors as {"error": "..."}, the body
size limit, the bearer token check, and the last line of defence against internal failures.

Errors take TensorFlow Serving's shape, {"error": "<one line>"}, with a 4xx status for the client's
mistakes (errors.ServeError). Anything else is a bug: the client gets 500 and {"error": "internal
error: <type>: <message>"}, never a traceback, and the traceback goes to the server's log.
"""
import hmac
import json
import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from tfpref.serve.errors import BadRequest, ServeError, TooLarge, Unauthorized

log = logging.getLogger("tfpref.serve")


class JSONResponse(Response):
    """JSON as TensorFlow Serving writes it: NaN and Infinity allowed (a float output may hold them),
    non-ASCII text as UTF-8."""
    media_type = "application/json"

    def render(self, content):
        return json.dumps(content, allow_nan=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def json_object(request):
    """The request's body as a JSON object (a dict), or BadRequest saying what it is instead."""
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not JSON ({e})") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def error_response(status, message, headers=None):
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def token_check(settings):
    """A FastAPI dependency refusing requests without "Authorization: Bearer <settings.token>" (401);
    it lets everything through when no token is set."""
    expected = f"Bearer {settings.token}".encode("utf-8")

    def check(request: Request):
        if not settings.token:
            return
        given = request.headers.get("authorization")
        if given is None:
            raise Unauthorized("this server needs a token: send the header 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected):
            raise Unauthorized("wrong token in the Authorization header")
    return check


class BodyLimit:
    """Refuses a request body longer than `max_bytes` (413): at once when its Content-Length says so,
    else as soon as that much has arrived (a chunked body). An ASGI middleware, so no route reads
    more than the limit into memory."""

    def __init__(self, app, max_bytes):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await error_response(400, "invalid Content-Length header")(scope, receive, send)
            if int(declared) > self.max_bytes:
                return await error_response(413, self._message(f"of {int(declared)} bytes"))(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise TooLarge(self._message(f"of more than {self.max_bytes} bytes"))
            return message

        await self.app(scope, limited_receive, send)

    def _message(self, size):
        return f"request body {size} is over this server's limit of {self.max_bytes} bytes (--max_body_bytes)"


class InternalErrors:
    """Turns an exception no handler took into 500 {"error": "internal error: ..."} and logs its
    traceback: a client never sees one. An ASGI middleware, inside Starlette's own (which would
    answer with plain text)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as e:  # noqa: BLE001 - the last line of defence: logged, then one line for the client
            log.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
            if started:  # the response is under way: all that is left is to drop the connection
                raise
            summary = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
            await error_response(500, f"internal error: {summary}")(scope, receive, send)


def install(app, settings):
    """Give `app` the shared error handling and the body size limit."""

    async def serve_error(request, error):
        return error_response(error.status, str(error), error.headers)

    async def http_error(request, error):  # Starlette's own: no such route (404), wrong method (405)
        message = error.detail
        if error.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(error.status_code, message, getattr(error, "headers", None))

    async def validation_error(request, error):  # FastAPI's parameter checks
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error_response(BadRequest.status, f"{where}: {first.get('msg', 'invalid request')}")

    app.add_exception_handler(ServeError, serve_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(InternalErrors)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # outermost: before anything reads the body
