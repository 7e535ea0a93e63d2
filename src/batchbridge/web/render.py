"""Pages and htmx fragments from Jinja2 templates, with the base context every page needs.

Templates autoescape everything and use StrictUndefined (a misspelt variable is an
error, not an empty cell). The base context: `request`, `identity` (or None), `csrf_token`,
`nav` (links for the identity) and `prefect_ui_url`. Every response not under /static
is `Cache-Control: no-store` (web.security); `phi=True` states it on the page itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from batchbridge.config.stewards import Role, open_directory
from batchbridge.errors import BatchbridgeError
from batchbridge.web.csrf import csrf_token
from batchbridge.web.identity import Identity, identity_of, settings_of

TEMPLATES_DIR = Path(__file__).parent / "templates"
NO_STORE = "no-store"


@dataclass(frozen=True)
class NavLink:
    """One link of the navigation bar."""

    label: str
    href: str
    current: bool


def make_environment(directory: Path = TEMPLATES_DIR) -> jinja2.Environment:
    """The templates' environment: autoescape on for every template, strict undefined."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def is_admin(request: Request, identity: Identity) -> bool:
    """Whether the person is admin of any tenant (the Audit link)."""
    try:
        directory = open_directory(settings_of(request).config_dir)
    except BatchbridgeError:
        return False  # the page itself reports an unreadable directory
    return bool(directory.tenants(identity.name, Role.ADMIN))


def nav_links(request: Request, identity: Identity | None) -> list[NavLink]:
    """Queue and Runs for everyone logged in; Audit for admins."""
    if identity is None:
        return []
    links = [("Queue", "/queue"), ("Runs", "/runs")]
    if is_admin(request, identity):
        links.append(("Audit", "/audit"))
    path = request.url.path
    return [
        NavLink(label, href, path == href or path.startswith(href + "/")) for label, href in links
    ]


def base_context(request: Request, *, with_nav: bool = True) -> dict[str, Any]:
    """What every template may use (see the module docstring)."""
    identity = identity_of(request)
    return {
        "request": request,
        "identity": identity,
        "csrf_token": csrf_token(request),
        "nav": nav_links(request, identity) if with_nav else [],
        "prefect_ui_url": settings_of(request).prefect_ui_url,
    }


def _render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    phi: bool,
    status_code: int,
    with_nav: bool,
) -> HTMLResponse:
    env: jinja2.Environment = request.app.state.templates
    merged = {**base_context(request, with_nav=with_nav), **context}
    html = env.get_template(template).render(merged)
    response = HTMLResponse(html, status_code=status_code)
    if phi:
        response.headers["Cache-Control"] = NO_STORE
    return response


def page(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    phi: bool,
    status_code: int = 200,
) -> HTMLResponse:
    """A whole page (a template extending base.html); `phi`: it shows a row at all."""
    return _render(request, template, context, phi=phi, status_code=status_code, with_nav=True)


def fragment(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    phi: bool = True,
    status_code: int = 200,
) -> HTMLResponse:
    """An htmx partial (a template not extending base.html); no navigation computed."""
    return _render(request, template, context, phi=phi, status_code=status_code, with_nav=False)
