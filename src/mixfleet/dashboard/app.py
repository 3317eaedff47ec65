"""The web app (Starlette): read-only JSON endpoints and the static page that draws them.

Every route answers GET (and HEAD) only; any other method gets 405. Every request must
carry the dashboard's token (there is always one): ``Authorization: Bearer TOKEN`` or the
``mixfleet_token_PORT`` cookie (HttpOnly, SameSite=Strict); ``?token=TOKEN`` (the URL printed at
start) is answered with that cookie and a redirect to the same URL without the token.
Tokens are compared in constant time. On a loopback bind, only loopback Host headers are
served (no DNS rebinding).
"""

from __future__ import annotations

import hmac
import json
import math
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mixfleet import __version__
from mixfleet.dashboard.chips import catalog_view, devices_view, tables_view
from mixfleet.dashboard.config import DashboardConfig, is_loopback
from mixfleet.dashboard.discover import item_id
from mixfleet.dashboard.fleet import fleet_view
from mixfleet.dashboard.sim import PNG_NAME, load_results
from mixfleet.dashboard.state import Dashboard

__all__ = ["create_app", "STATIC_DIR", "cookie_name"]

STATIC_DIR = Path(__file__).parent / "static"


def cookie_name(port: int) -> str:
    """The token's cookie on ``port`` (cookies ignore ports: two dashboards on one host
    must not overwrite each other's)."""
    return f"mixfleet_token_{port}"


_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def _clean(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, bytes):
        return f"<{len(o)} bytes>"
    return o


_SECURITY = [(b"content-security-policy", _CSP.encode()), (b"x-content-type-options", b"nosniff"),
             (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store")]


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(_clean(content), separators=(",", ":"), default=str).encode()


class _Guard:
    """Token check, read-only methods, and security headers on every response."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _valid(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    def _presented(self, scope: Scope) -> tuple[str | None, bool]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        q = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if "token" in q:
            return q["token"], True
        if "cookie" in headers:
            c = SimpleCookie()
            try:
                c.load(headers["cookie"])
            except Exception:
                return None, False
            name = cookie_name(scope["server"][1]) if scope.get("server") else ""
            if name in c:
                return c[name].value, False
        return None, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await PlainTextResponse("read-only: only GET and HEAD are served\n", 405,
                                    headers={"Allow": "GET, HEAD"})(scope, receive, send)
            return
        given, from_query = self._presented(scope)
        if not self._valid(given):
            msg = ("unauthorized: this dashboard needs its token (open the URL it "
                   "printed at start, or send Authorization: Bearer TOKEN)\n")
            await self._with_headers(PlainTextResponse(
                msg, 401, headers={"WWW-Authenticate": "Bearer"}))(scope, receive, send)
            return
        if from_query:  # the printed URL: hand out the cookie, drop the token from the URL
            rest = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode(
                "latin-1"), keep_blank_values=True) if k != "token"]
            path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
            where = "/" + path.lstrip("/") + ("?" + urlencode(rest) if rest else "")
            r = Response(status_code=303, headers={"Location": where})
            if scope.get("server"):
                r.set_cookie(cookie_name(scope["server"][1]), self.token.decode(), path="/",
                             httponly=True, samesite="strict")
            await self._with_headers(r)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _SECURITY
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    def _with_headers(r: Response) -> Response:
        r.raw_headers += _SECURITY
        return r


def create_app(config: DashboardConfig) -> ASGIApp:
    """The ASGI app for ``config``; it reads the given directories and writes nothing."""
    dash = Dashboard(config)

    def _points(request: Request) -> int:
        try:
            return max(50, min(5000, int(request.query_params.get("points", "1000"))))
        except ValueError:
            return 1000

    def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    def info(request: Request) -> Response:
        return _JSON({"version": __version__, "refresh_s": config.refresh_s,
                      "roots": [str(r) for r in config.runs],
                      "fleet": str(config.fleet) if config.fleet else None})

    def runs(request: Request) -> Response:
        return _JSON(dash.runs())

    def run(request: Request) -> Response:
        path = dash.run_by_id(request.path_params["rid"])
        if path is None:
            return _JSON({"error": "no such run (it may have been moved or deleted)"}, 404)
        store = dash.store(path)
        try:
            since = int(request.query_params.get("v", "-1"))
        except ValueError:
            since = -1
        store.refresh()
        if since == store.version and store.complete:
            return _JSON({"unchanged": True, "version": store.version,
                          "state": store.state()})
        return _JSON({"id": item_id(path), "path": str(path), "name": path.name,
                      **store.data(_points(request), refresh=False)})

    def chips(request: Request) -> Response:
        return _JSON({"devices": devices_view(), "tables": tables_view(dash.found().tables),
                      "catalog": catalog_view()})

    def sims(request: Request) -> Response:
        return _JSON({"results": [{"id": item_id(p), "path": str(p)}
                                  for p in dash.found().results]})

    def sim(request: Request) -> Response:
        path = dash.results_by_id(request.path_params["sid"])
        if path is None:
            return _JSON({"error": "no such results.json"}, 404)
        return _JSON({"id": item_id(path), **load_results(path)})

    def sim_png(request: Request) -> Response:
        path = dash.results_by_id(request.path_params["sid"])
        name = request.path_params["name"]
        if path is None or not PNG_NAME.match(name) or not (path.parent / name).is_file():
            return PlainTextResponse("no such plot\n", 404)
        return FileResponse(path.parent / name, media_type="image/png")

    def fleet(request: Request) -> Response:
        return _JSON(fleet_view(config.fleet))

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/info", info, methods=["GET"]),
        Route("/api/runs", runs, methods=["GET"]),
        Route("/api/run/{rid:str}", run, methods=["GET"]),
        Route("/api/chips", chips, methods=["GET"]),
        Route("/api/sims", sims, methods=["GET"]),
        Route("/api/sim/{sid:str}", sim, methods=["GET"]),
        Route("/api/sim/{sid:str}/png/{name:str}", sim_png, methods=["GET"]),
        Route("/api/fleet", fleet, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = []
    if is_loopback(config.host):
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=[
            "127.0.0.1", "localhost", "::1", "[::1]", config.host]))
    app = Starlette(routes=routes, middleware=middleware)
    return _Guard(app, config.token)
