"""The web endpoint (Starlette): unsubscribe, confirm, preferences, subscribe.

A thin shell: each route reads the request, calls one function of
``wip_mailer.audience.selfservice`` in a worker thread, and renders a page from
``templates/web/``. Every page is in Italian and English (messages in
``templates/web/messages.toml``), in the colours of ``templates/theme.toml``. Unsubscribes
(the RFC 8058 one-click POST and the page's button) go through ``audience.unsubscribe_batch``,
which group-commits them and answers each only once it is committed.

GET never changes anything: the confirmation link and the unsubscribe link show a page
whose button POSTs. No token route answers a redirect (RFC 8058 wants none): a trailing
slash is answered like the address without it; only ``/`` redirects, to the archive.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from wip_mailer import db
from wip_mailer.audience import selfservice
from wip_mailer.audience.addresses import InvalidAddressError, normalise_email
from wip_mailer.audience.unsubscribe_batch import UnsubscribeNotRecordedError, UnsubscribeWriter
from wip_mailer.errors import DeliveryError, InvalidInputError, NotFoundError, StateError, WipMailerError
from wip_mailer.settings import Settings
from wip_mailer.templating import environment as template_environment
from wip_mailer.templating import load_labels, load_theme
from wip_mailer.tokens import InvalidTokenError

T = TypeVar("T")

# Tokens are in the URL: keep pages out of caches, search engines and Referer headers.
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex",
            "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}
ONE_CLICK_SOURCE = "one-click (RFC 8058)"
PAGE_LANGUAGES = ("it", "en")
MESSAGES_FILE = "web/messages.toml"
# The subscribe form's trap: a field people never see (off-screen, skipped by Tab); bots
# that fill in every field fill it, and get the usual answer with no email sent.
HONEYPOT_FIELD = "website_leave_empty"
MAX_UNSUBSCRIBE_BODY = 64 * 1024
_MULTIPART_VALUE = re.compile(
    rb'name=(?:"List-Unsubscribe"|List-Unsubscribe(?=[\s;]))[^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*?\r?\n'
    rb'([^\r\n]*)', re.I)


def one_click_values(content_type: str, body: bytes) -> tuple[list[str], bool]:
    """The List-Unsubscribe values a POST body carries, and whether it is the unsubscribe
    page's own form (``confirm=yes``), read leniently: the signed URL is the proof, so a
    body that a strict parser refuses (RFC 8058 §8.3 prints a multipart example whose
    boundary does not match its delimiter lines) is still read for what it says."""
    if "multipart/" in content_type.lower() or body.lstrip().startswith(b"--"):
        values = [m.decode("utf-8", "replace").strip() for m in _MULTIPART_VALUE.findall(body)]
        return values, False
    fields = parse_qs(body.decode("utf-8", "replace").strip(), keep_blank_values=True)
    return [v.strip() for v in fields.get("List-Unsubscribe", [])], fields.get("confirm") == ["yes"]


class _HourlyLimit:
    """At most ``limit`` events per key in any hour (a sliding window kept in memory: the
    web endpoint is one process)."""

    def __init__(self, limit: int, window: float = 3600.0, max_keys: int = 100_000):
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._seen: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        times = self._seen.get(key)
        if times is None:
            if len(self._seen) >= self.max_keys:  # forget the oldest keys, not the limit
                for old in list(self._seen)[: self.max_keys // 10]:
                    del self._seen[old]
            times = self._seen[key] = deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True


def create_app(settings: Settings, engine: Engine | None = None, *,
               archive_dir: Path | None = None) -> Starlette:
    """The ASGI app; with ``archive_dir`` it also serves `wip-mailer archive build`'s output
    at /archive/ (the default WIP_MAILER_ARCHIVE_URL), so one small service is enough."""
    settings.require_secret_key()
    engine = engine or db.open_database(settings.database_url)
    pages = template_environment(settings)
    unsubscribes = UnsubscribeWriter(engine, settings)

    per_ip = _HourlyLimit(settings.subscribe_per_ip_per_hour)
    per_address = _HourlyLimit(settings.subscribe_per_address_per_hour)
    subscribing = asyncio.Lock()  # one subscribe at a time: a burst cannot race the daily check

    shared: dict[str, Any] = {}
    shared_at = [-1.0]

    def page_values() -> dict[str, Any]:
        # The theme and messages, read again at most once a second (an edit shows at once,
        # and a burst of one-click POSTs does not re-read and re-merge two files per page).
        now = time.monotonic()
        if now - shared_at[0] > 1.0:
            shared.update(theme=load_theme(settings), messages={
                lang: load_labels(settings, MESSAGES_FILE, lang)[0] for lang in PAGE_LANGUAGES})
            shared_at[0] = now
        return shared

    def page(template: str, status: int = 200, headers: dict[str, str] | None = None,
             **context: Any) -> HTMLResponse:
        html = pages.get_template(f"web/{template}").render(
            base_url=settings.base_url, privacy_url=settings.privacy_url,
            archive_url=settings.archive_url, **page_values(), **context)
        return HTMLResponse(html, status_code=status, headers={**_HEADERS, **(headers or {})})

    def message_page(key: str, status: int, **headers: str) -> HTMLResponse:
        return page("error.html", status, headers, message=key)

    async def in_session(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            with db.session_scope(engine) as session:
                return function(session, settings, *args, **kwargs)
        return await run_in_threadpool(call)

    def visitor(request: Request) -> selfservice.Visitor:
        return selfservice.Visitor(ip=request.client.host if request.client else None,
                                   user_agent=request.headers.get("user-agent"))

    def failure(error: WipMailerError) -> HTMLResponse:
        """The page for an error, in the page languages (the library's sentence is English)."""
        if isinstance(error, InvalidTokenError):
            return message_page("link_invalid", 400)
        if isinstance(error, UnsubscribeNotRecordedError):
            return message_page("not_recorded", 500)
        if isinstance(error, selfservice.ListNotPublicError):
            return message_page("list_not_public", 404)
        if isinstance(error, NotFoundError):
            return message_page("not_found", 404)
        if isinstance(error, StateError):
            return message_page("state_changed", 409)
        if isinstance(error, DeliveryError):
            return message_page("delivery_failed", 503)
        if isinstance(error, InvalidInputError):
            return message_page("bad_request", 400)
        return message_page("server_error", 500)

    async def unsubscribe_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            if request.method == "POST":
                body = b""
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > MAX_UNSUBSCRIBE_BODY:
                        return message_page("bad_request", 413)
                values, page_form = one_click_values(request.headers.get("content-type", ""), body)
                if any(value != "One-Click" for value in values):
                    return message_page("bad_request", 400)  # it says something else: do nothing
                source = ("unsubscribe page" if page_form and not values else ONE_CLICK_SOURCE)
                view = await unsubscribes.unsubscribe(token, source=source, visitor=visitor(request))
                return page("unsubscribed.html", view=view, token=token)
            view = await in_session(selfservice.unsubscribe_view, token)
        except WipMailerError as error:
            return failure(error)
        return page("unsubscribe.html", view=view, token=token)

    async def confirm_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            if request.method != "POST":  # GET or HEAD: a link scanner's fetch confirms nothing
                view = await in_session(selfservice.confirm_view, token)
                if view.confirmed:
                    return page("confirmed.html", list_name=view.list_name)
                return page("confirm.html", view=view, token=token)
            list_name = await in_session(selfservice.confirm_by_token, token, visitor(request))
        except WipMailerError as error:
            return failure(error)
        return page("confirmed.html", list_name=list_name)

    async def preferences_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            if request.method == "POST":
                form = await request.form()
                chosen = {int(v) for v in form.getlist("list") if isinstance(v, str) and v.isdigit()}
                view = await in_session(selfservice.save_preferences, token, chosen, visitor(request))
            else:
                view = await in_session(selfservice.preferences_view, token)
        except WipMailerError as error:
            return failure(error)
        return page("preferences.html", view=view, token=token)

    async def subscribe_page(request: Request) -> Response:
        list_name = request.path_params["list_name"]
        try:
            mailing_list = await in_session(
                lambda session, _settings: selfservice.find_public_list(session, list_name))
        except WipMailerError as error:
            return failure(error)

        def form_page(status: int = 200, error: str | None = None, email: str = "", name: str = "",
                      **headers: str) -> HTMLResponse:
            return page("subscribe.html", status, headers, mailing_list=mailing_list, error=error,
                        email=email, name=name, honeypot=HONEYPOT_FIELD)

        if request.method != "POST":  # GET, HEAD
            return form_page()
        if not per_ip.allow(visitor(request).ip or "unknown"):
            return message_page("too_many", 429, **{"Retry-After": "3600"})
        form = await request.form()
        email, name = str(form.get("email") or ""), str(form.get("name") or "")
        if form.get(HONEYPOT_FIELD):
            return page("subscribe-sent.html", mailing_list=mailing_list)  # a bot: say the usual
        if form.get("consent") != "yes":
            return form_page(400, "consent_missing", email, name)
        try:
            address = normalise_email(email)
        except InvalidAddressError:
            return form_page(400, "bad_email", email, name)
        if not per_address.allow(address):
            return message_page("too_many", 429, **{"Retry-After": "3600"})
        try:
            async with subscribing:
                await run_in_threadpool(selfservice.subscribe_from_form, engine, settings, address, name,
                                        list_name, visitor(request))
        except InvalidAddressError:
            return form_page(400, "bad_email", email, name)
        except InvalidInputError:
            return form_page(400, "bad_name", email, name)
        except WipMailerError as error:
            return failure(error)
        return page("subscribe-sent.html", mailing_list=mailing_list)

    async def lists_page(_request: Request) -> Response:
        lists = await in_session(lambda session, _: selfservice.public_lists(session))
        return page("home.html", lists=lists, archive_here=archive_dir is not None)

    async def home(request: Request) -> Response:
        if archive_dir is not None:  # the archive is the site's front page
            return RedirectResponse("/archive/", status_code=302, headers=_HEADERS)
        return await lists_page(request)

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return message_page("not_found_page", 404)

    async def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    async def archive_root(request: Request) -> Response:
        return page("moved.html", 404, path=f"{request.url.path}/")

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await unsubscribes.start()
        # What start-up loaded (SQLAlchemy, the models, Jinja, Starlette) lives as long as
        # the server: out of the cyclic collector's reach, or each full collection walks it
        # all and stops every request for ~200 ms (measured under a burst of one-click POSTs).
        gc.collect()
        gc.freeze()
        yield
        await unsubscribes.aclose()  # commits what is queued, then stops the writer

    routes: list[BaseRoute] = [
        route
        for path, endpoint, methods in [
            ("/u/{token}", unsubscribe_page, ["GET", "POST"]),
            ("/confirm/{token}", confirm_page, ["GET", "POST"]),
            ("/preferences/{token}", preferences_page, ["GET", "POST"]),
            ("/subscribe/{list_name}", subscribe_page, ["GET", "POST"]),
            ("/subscribe", lists_page, ["GET"]),
            ("/healthz", health, ["GET"]),
        ]
        for route in (Route(path, endpoint, methods=methods), Route(path + "/", endpoint, methods=methods))
    ]
    routes.append(Route("/", home, methods=["GET", "HEAD"]))
    if archive_dir is not None:
        routes.append(Route("/archive", archive_root, methods=["GET", "HEAD"]))
        routes.append(Mount("/archive", _ArchiveFiles(directory=archive_dir, html=True, page=page),
                            name="archive"))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found})
    app.router.redirect_slashes = False
    app.state.unsubscribe_writer = unsubscribes
    return app


class _ArchiveFiles(StaticFiles):
    """StaticFiles that never redirects: a folder named without its trailing slash gets a
    404 page naming the right address (a folder's index page uses relative links, so it
    cannot be answered at the address without the slash)."""

    def __init__(self, *, page: Callable[..., HTMLResponse], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._page = page

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if isinstance(response, RedirectResponse):
            return self._page("moved.html", 404, path=f"{Request(scope).url.path}/")
        if path.endswith("feed.xml") and response.status_code == 200:  # Atom, not just any XML
            response.headers["content-type"] = "application/atom+xml; charset=utf-8"
        return response
