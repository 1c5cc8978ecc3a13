"""Operators (admin): who has access with which role, and adding someone by one-time link."""

from __future__ import annotations

from aiohttp import web

from mailer.console.accounts import Role
from mailer.console.enrolment import EnrolmentError, add_operator
from mailer.console.web import console_of, operator_of, render, requires


@requires(Role.ADMIN)
async def operators_page(request: web.Request) -> web.Response:
    rows = await console_of(request).accounts.operators_list()
    return render(request, "operators.html", operators=rows, link=None, added=None, error=None)


@requires(Role.ADMIN)
async def operators_add(request: web.Request) -> web.Response:
    console = console_of(request)
    form = await request.post()
    email = str(form.get("email", ""))
    link, error = None, None
    try:
        role = Role.parse(str(form.get("role", "")))
        enrolled = await add_operator(
            console.accounts,
            console.settings,
            email,
            role,
            actor=operator_of(request).email,
        )
        link = enrolled.setup_link
    except (EnrolmentError, ValueError) as exc:
        error = str(exc)
    rows = await console.accounts.operators_list()
    return render(
        request,
        "operators.html",
        400 if error else 200,
        operators=rows,
        link=link,
        added=email,
        error=error,
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/operators", operators_page, name="operators")
    router.add_post("/operators", operators_add, name="operators_add")
