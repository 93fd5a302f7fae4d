"""The web pages: chat (/), labelling (/label), the A/B visitor page (/ab) and its report (/ab/report).

The pages are static files (static/): everything they show comes from the JSON APIs and enters the
page through `textContent` only, so a model output or a data record holding markup shows as text.
Every response also carries a Content-Security-Policy that allows this server's own scripts and
nothing inline, a second wall should markup ever get in. A page of a feature the server was not
started with (labelling, A/B) is 404 with a message naming the flags it needs. The pages need no
token (they hold no data); their API calls send the `?token=` of the page's URL.
"""
import os

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from tfpref.serve.errors import NotFound

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a page's URL may carry the token
}


def page_router(labelling, ab):
    """The pages; `labelling` and `ab` say whether those features run."""
    router = APIRouter()

    def page(name, needs=None, flags=""):
        def serve_page():
            if needs is False:
                raise NotFound(f"this server runs no {name} page: start it with {flags}")
            return FileResponse(os.path.join(STATIC_DIR, f"{name}.html"))
        return serve_page

    router.get("/")(page("chat"))
    router.get("/label")(page("label", labelling, "--label_input FILE --label_output FILE"))
    router.get("/ab")(page("ab", ab, "--ab DIR_A DIR_B --ab_log FILE"))
    router.get("/ab/report")(page("report", ab, "--ab DIR_A DIR_B --ab_log FILE"))
    return router


def static_files():
    return StaticFiles(directory=STATIC_DIR)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response (the API's JSON too). An ASGI middleware."""

    def __init__(self, app):
        self.app = app
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                present = {name for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    header for header in self.headers if header[0] not in present]
            await send(message)

        await self.app(scope, receive, with_headers)


__all__ = ["page_router", "static_files", "SecurityHeaders", "SECURITY_HEADERS", "STATIC_DIR"]
