"""The web endpoint (Starlette): unsubscribe, confirm, preferences, subscribe.

A thin shell: each route reads the request, calls one function of
``wip_mailer.audience.selfservice`` in a worker thread, and renders a page from
``templates/web/``. Pages are in Italian with English. Unsubscribes (the RFC 8058
one-click POST and the page's button) go through ``audience.unsubscribe_batch``, which
group-commits them and answers each only once it is committed.

No route answers a redirect (RFC 8058 wants none): a trailing slash is answered like the
address without it.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from wip_mailer import db
from wip_mailer.audience import selfservice
from wip_mailer.audience.unsubscribe_batch import UnsubscribeWriter
from wip_mailer.errors import InvalidInputError, NotFoundError, StateError, WipMailerError
from wip_mailer.settings import Settings
from wip_mailer.templating import environment as template_environment
from wip_mailer.tokens import InvalidTokenError

T = TypeVar("T")

# Tokens are in the URL: keep pages out of caches, search engines and Referer headers.
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex",
            "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}
ONE_CLICK_SOURCE = "one-click (RFC 8058)"


def create_app(settings: Settings, engine: Engine | None = None, *,
               archive_dir: Path | None = None) -> Starlette:
    """The ASGI app; with ``archive_dir`` it also serves `wip-mailer archive build`'s output
    at /archive/ (the default WIP_MAILER_ARCHIVE_URL), so one small service is enough."""
    settings.require_secret_key()
    engine = engine or db.open_database(settings.database_url)
    pages = template_environment(settings)
    unsubscribes = UnsubscribeWriter(engine, settings)

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = pages.get_template(f"web/{template}").render(base_url=settings.base_url, **context)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    async def in_session(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            with db.session_scope(engine) as session:
                return function(session, settings, *args, **kwargs)
        return await run_in_threadpool(call)

    def visitor(request: Request) -> selfservice.Visitor:
        return selfservice.Visitor(ip=request.client.host if request.client else None,
                                   user_agent=request.headers.get("user-agent"))

    def failure(error: WipMailerError) -> HTMLResponse:
        status = 400
        if isinstance(error, NotFoundError):
            status = 404
        elif isinstance(error, StateError):
            status = 409
        elif not isinstance(error, InvalidTokenError | InvalidInputError):
            status = 500
        return page("error.html", status, message=str(error))

    async def unsubscribe_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            if request.method == "POST":
                form = await request.form()
                one_click = form.get("List-Unsubscribe") == "One-Click"
                view = await unsubscribes.unsubscribe(
                    token, source=ONE_CLICK_SOURCE if one_click else "unsubscribe page",
                    visitor=visitor(request))
                return page("unsubscribed.html", view=view, token=token)
            view = await in_session(selfservice.unsubscribe_view, token)
        except WipMailerError as error:
            return failure(error)
        return page("unsubscribe.html", view=view, token=token)

    async def confirm_page(request: Request) -> Response:
        try:
            list_name = await in_session(selfservice.confirm_by_token, request.path_params["token"],
                                         visitor(request))
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

        def public_list(session: Session, _settings: Settings) -> Any:
            found = [lst for lst in selfservice.public_lists(session) if lst.name == list_name]
            if not found:
                raise NotFoundError(f"There is no public list named {list_name!r}.")
            return found[0]

        try:
            mailing_list = await in_session(public_list)
            if request.method == "GET":
                return page("subscribe.html", mailing_list=mailing_list, error=None, email="", name="")
            form = await request.form()
            email, name = str(form.get("email") or ""), str(form.get("name") or "")
            if form.get("consent") != "yes":
                return page("subscribe.html", 400, mailing_list=mailing_list, email=email, name=name,
                            error="Per iscriversi occorre accettare l'informativa. / "
                                  "Please accept the privacy notice to subscribe.")
            try:
                await run_in_threadpool(selfservice.subscribe_from_form, engine, settings, email, name,
                                        list_name, visitor(request))
            except InvalidInputError as error:
                return page("subscribe.html", 400, mailing_list=mailing_list, email=email, name=name,
                            error=str(error))
        except WipMailerError as error:
            return failure(error)
        return page("subscribe-sent.html", mailing_list=mailing_list)

    async def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    async def archive_root(request: Request) -> Response:
        return page("error.html", 404, message=f"The archive is at {request.url.path}/.")

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
            ("/confirm/{token}", confirm_page, ["GET"]),
            ("/preferences/{token}", preferences_page, ["GET", "POST"]),
            ("/subscribe/{list_name}", subscribe_page, ["GET", "POST"]),
            ("/healthz", health, ["GET"]),
        ]
        for route in (Route(path, endpoint, methods=methods), Route(path + "/", endpoint, methods=methods))
    ]
    if archive_dir is not None:
        routes.append(Route("/archive", archive_root, methods=["GET", "HEAD"]))
        routes.append(Mount("/archive", _ArchiveFiles(directory=archive_dir, html=True, page=page),
                            name="archive"))
    app = Starlette(routes=routes, lifespan=lifespan)
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
            return self._page("error.html", 404, message=f"This page is at {Request(scope).url.path}/.")
        return response
